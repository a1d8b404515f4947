"""Whether an uploaded file (or request body) is UTF-8 text, and if not, why.

One check for every reader of CSV, JSON and JSON Lines: labelling's imports
and monitoring's prediction-log uploads, API bodies and the
``ingest_predictions`` command. A binary file (an image, a spreadsheet, an
archive) is named as such from its first bytes, before any parser turns its
bytes into a misleading "column" or a codec traceback; text that is not
UTF-8 is located by byte, line and offset.
"""

from collections.abc import Iterable

HEAD_BYTES = 64 * 1024  # what head_problem looks at
_BLOCK = 1 << 20

# Leading bytes of the binary files people pick by mistake.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive, such as an Excel .xlsx workbook"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document, such as an Excel .xls workbook"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x80\x04\x95", "a Python pickle"),
)
# UTF-16 and UTF-32 text starts with one of these; it is text, but not UTF-8.
_OTHER_ENCODINGS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
TEXT_FORMATS = "CSV, JSON or JSONL"
# C0 control bytes other than tab, newline, vertical tab, form feed, carriage
# return and escape: text holds hardly any, a binary file many.
_CONTROLS = bytes(b for b in range(32) if b not in b"\t\n\x0b\x0c\r\x1b")


def binary_kind(head: bytes) -> str | None:
    """What binary file ``head`` (a file's first bytes) starts like, or None for text."""
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if any(head.startswith(bom) for bom, _ in _OTHER_ENCODINGS):
        return None  # text in another encoding: first_bad_utf8 says where
    if b"\x00" in head:
        return "NUL bytes, which text never holds"
    controls = len(head) - len(head.translate(None, _CONTROLS))
    if controls >= 2 and controls * 50 > len(head):  # over 2% of the bytes
        return "control bytes, which text does not hold"
    return None


def first_bad_utf8(blocks: Iterable[bytes]) -> tuple[int, int, bytes] | None:
    """(byte offset, line, bad bytes) of the first byte that is not UTF-8 in
    the concatenated ``blocks``, or None when they are all UTF-8 text.
    Lines count from 1."""
    offset, line, carry = 0, 1, b""
    for block in blocks:
        if not block:
            continue
        data = carry + block
        carry = b""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.end == len(data) and exc.reason == "unexpected end of data":
                # A character cut in two by the block boundary: read on.
                good, carry = data[: exc.start], data[exc.start :]
                offset, line = offset + len(good), line + good.count(b"\n")
                continue
            return (
                offset + exc.start,
                line + data[: exc.start].count(b"\n"),
                data[exc.start : exc.end],
            )
        offset, line = offset + len(data), line + data.count(b"\n")
    if carry:  # the text ends inside a character
        return offset, line, carry
    return None


def file_blocks(path, size=_BLOCK):
    with open(path, "rb") as handle:
        while block := handle.read(size):
            yield block


def body_blocks(body: bytes, size=_BLOCK):
    view = memoryview(body)
    for start in range(0, len(body), size):
        yield bytes(view[start : start + size])


def not_text_message(name, kind) -> str:
    return (
        f"{name} is not a text file ({TEXT_FORMATS}): it starts with bytes of a binary file "
        f"({kind})."
    )


def other_encoding(head: bytes) -> str | None:
    """The encoding a byte-order mark at the start of ``head`` names, if not UTF-8."""
    return next((enc for bom, enc in _OTHER_ENCODINGS if head.startswith(bom)), None)


def not_utf8_message(name, found, *, where="", encoding=None) -> str:
    """``found``: what first_bad_utf8 returned; ``where``: e.g. "row 3, column “text”";
    ``encoding``: what other_encoding said of the file's first bytes."""
    offset, line, bad = found
    place = f"line {line}" + (f", {where}" if where else "") + f", byte offset {offset:,}"
    seems = f" (it looks like {encoding} text)" if encoding and offset == 0 else ""
    return (
        f"{name} is not UTF-8 text: byte 0x{bad[:1].hex()} at {place}{seems}. "
        "Save it as UTF-8 (in Excel: “CSV UTF-8”) and try again."
    )


def head_problem(head: bytes, name) -> str | None:
    """Why a file whose first bytes are ``head`` is no UTF-8 text, or None as
    far as these bytes tell. A character cut at the end of ``head`` is fine
    (the rest of the file holds its other bytes)."""
    kind = binary_kind(head)
    if kind is not None:
        return not_text_message(name, kind)
    found = first_bad_utf8([head])
    if found is None:
        return None
    if len(head) >= HEAD_BYTES and found[0] + len(found[2]) == len(head):
        return None  # a character cut where the head ends
    return not_utf8_message(name, found, encoding=other_encoding(head))


def _problem(head: bytes, blocks: Iterable[bytes], name) -> str | None:
    """Why the text that starts with ``head`` and is read as ``blocks`` is no
    UTF-8 text, or None."""
    kind = binary_kind(head)
    if kind is not None:
        return not_text_message(name, kind)
    found = first_bad_utf8(blocks)
    if found is None:
        return None
    return not_utf8_message(name, found, encoding=other_encoding(head))


def body_problem(body: bytes, name) -> str | None:
    """Why a whole body (or file read into memory) is no UTF-8 text, or None."""
    return _problem(body[:HEAD_BYTES], body_blocks(body), name)


def path_problem(path, name) -> str | None:
    """Why the file at ``path`` is no UTF-8 text, or None; reads it whole."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    return _problem(head, file_blocks(path), name)
