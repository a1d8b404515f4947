"""leanml_site.textfiles: the one check that a file is UTF-8 text, shared by
labelling's imports and monitoring's uploads, API bodies and ingest command."""

import pytest

from leanml_site import textfiles


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
        (b"%PDF-1.7\n", "a PDF document"),
        (b"PK\x03\x04\x14\x00", "a ZIP archive, such as an Excel .xlsx workbook"),
        (b"\x1f\x8b\x08\x00", "a gzip archive"),
        (b"id,text\n1,a\x00b\n", "NUL bytes, which text never holds"),
        (bytes(range(128, 256)) + bytes(range(1, 128)), "control bytes, which text does not hold"),
        (b"id,text\n1,caf\xc3\xa9\n", None),
        (b"id,text\n1,a\x1b[1mbold\x1b[0m\t\x0c\n" * 5, None),
        (b"\xef\xbb\xbfid,text\n", None),  # UTF-8 with Excel's byte-order mark
        (b"\xff\xfei\x00d\x00", None),  # UTF-16: text, told apart by first_bad_utf8
    ],
)
def test_binary_kind_names_common_binary_files_and_passes_text(head, kind):
    assert textfiles.binary_kind(head) == kind


def test_first_bad_utf8_finds_offset_line_and_bytes_across_blocks():
    text = "é\n".encode() * 3 + b"ok\nbad \xe9 here\n"
    # Every split of the text into two blocks, including inside "é".
    for cut in range(len(text) + 1):
        found = textfiles.first_bad_utf8([text[:cut], text[cut:]])
        assert found == (len("é\n".encode()) * 3 + 7, 5, b"\xe9"), cut


def test_first_bad_utf8_passes_text_and_catches_a_cut_last_character():
    assert textfiles.first_bad_utf8([b"caf\xc3", b"\xa9\n"]) is None
    assert textfiles.first_bad_utf8([]) is None
    assert textfiles.first_bad_utf8([b"caf\xc3"]) == (3, 1, b"\xc3")


def test_head_problem_ignores_a_character_cut_where_the_head_ends():
    head = b"a" * (textfiles.HEAD_BYTES - 1) + b"\xc3"
    assert textfiles.head_problem(head, "f.csv") is None
    # A whole (short) file that ends inside a character is not UTF-8.
    assert textfiles.head_problem(b"a\xc3", "f.csv").startswith("f.csv is not UTF-8 text")


def test_messages_name_the_file_and_where():
    assert textfiles.body_problem(b"\x89PNG\r\n\x1a\n", "x.csv") == (
        "x.csv is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
        "file (a PNG image)."
    )
    assert textfiles.body_problem(b"a\nb\n\x89c", "x.csv") == (
        "x.csv is not UTF-8 text: byte 0x89 at line 3, byte offset 4. "
        "Save it as UTF-8 (in Excel: “CSV UTF-8”) and try again."
    )
    utf16 = "id,text\n".encode("utf-16")
    assert "(it looks like UTF-16 text)" in textfiles.body_problem(utf16, "x.csv")
    assert textfiles.body_problem("id,tëxt\n".encode(), "x.csv") is None


def test_path_problem_reads_the_whole_file(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"id,text\n" + b"1,fine\n" * 300_000 + b"2,caf\xe9\n")
    # Its first bytes alone say nothing is wrong.
    assert textfiles.head_problem(path.read_bytes()[: textfiles.HEAD_BYTES], "big.csv") is None
    assert textfiles.path_problem(path, "big.csv").startswith(
        "big.csv is not UTF-8 text: byte 0xe9 at line 300002, byte offset 2,100,013."
    )
