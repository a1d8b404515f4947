"""Snapshot hashing and the diff an iteration page shows."""

import random

import numpy as np
import pandas as pd
import pytest

from ml.snapshot import snapshot_diff, snapshot_hash

ROWS = [
    ("r1", 1, "great", "train"),
    ("r2", 1, "other", "train"),
    ("r3", 2, "great", "holdout"),
    ("r4", 1, "other", "train"),
]


def test_hash_ignores_row_order_and_input_shape():
    shuffled = ROWS[:]
    random.Random(3).shuffle(shuffled)
    frame = pd.DataFrame(ROWS, columns=["external_id", "revision", "label", "split"])
    dicts = [dict(zip(["external_id", "revision", "label", "split"], r, strict=True)) for r in ROWS]
    expected = snapshot_hash(ROWS)
    assert len(expected) == 64
    assert snapshot_hash(shuffled) == expected
    assert snapshot_hash(frame.sample(frac=1, random_state=1)) == expected
    assert snapshot_hash(dicts) == expected
    # numpy integers (as read from a DataFrame) hash like Python ones.
    frame["revision"] = frame["revision"].astype(np.int64)
    assert snapshot_hash(frame) == expected


@pytest.mark.parametrize(
    "changed",
    [
        ("r1", 2, "great", "train"),  # revision
        ("r1", 1, "other", "train"),  # label
        ("r1", 1, "great", "holdout"),  # split
        ("r9", 1, "great", "train"),  # id
    ],
)
def test_hash_changes_with_any_field(changed):
    assert snapshot_hash([changed, *ROWS[1:]]) != snapshot_hash(ROWS)


def test_hash_changes_when_a_row_is_added_or_removed():
    assert snapshot_hash(ROWS[:-1]) != snapshot_hash(ROWS)
    assert snapshot_hash([*ROWS, ("r5", 1, "great", "train")]) != snapshot_hash(ROWS)


def test_hash_tells_the_revision_1_from_the_string_1():
    assert snapshot_hash([("r1", 1, "a", "train")]) != snapshot_hash([("r1", "1", "a", "train")])


def test_it_rejects_repeated_ids_and_malformed_rows():
    with pytest.raises(ValueError, match=r"external_id repeated in the snapshot: \['r1'\]"):
        snapshot_hash([*ROWS, ("r1", 3, "great", "train")])
    with pytest.raises(ValueError, match="snapshot row 2 has 3 values"):
        snapshot_hash([ROWS[0], ("r2", 1, "great")])
    with pytest.raises(ValueError, match=r"snapshot row 1 lacks \['split'\]"):
        snapshot_hash([{"external_id": "r1", "revision": 1, "label": "a"}])
    with pytest.raises(ValueError, match=r"missing \['label'\]"):
        snapshot_hash(pd.DataFrame({"external_id": [], "revision": [], "split": []}))


def test_diff_lists_added_relabelled_corrected_and_removed_samples_per_class():
    new = [
        ("r1", 1, "great", "train"),  # unchanged
        ("r2", 1, "great", "train"),  # relabelled other → great
        ("r3", 3, "great", "holdout"),  # corrected (revision 2 → 3), same label
        # r4 excluded (flagged)
        ("r5", 1, "other", "train"),  # added
        ("r6", 1, "other", "holdout"),  # added
    ]
    diff = snapshot_diff(ROWS, new)
    assert diff.added == [("r5", "other"), ("r6", "other")]
    assert diff.removed == [("r4", "other")]
    assert diff.relabelled == [("r2", "other", "great")]
    assert diff.corrected == [("r3", 2, 3)]
    per_class = {c.label: c for c in diff.per_class}
    great, other = per_class["great"], per_class["other"]
    assert (great.old, great.new, great.added, great.removed) == (2, 3, 0, 0)
    assert (great.relabelled_in, great.relabelled_out) == (1, 0)
    assert (other.old, other.new, other.added, other.removed) == (2, 2, 2, 1)
    assert (other.relabelled_in, other.relabelled_out) == (0, 1)
    assert not diff.unchanged


def test_diff_of_identical_snapshots_is_empty():
    diff = snapshot_diff(ROWS, list(reversed(ROWS)))
    assert diff.unchanged
    assert [(c.label, c.old, c.new) for c in diff.per_class] == [("great", 2, 2), ("other", 2, 2)]


def test_diff_from_nothing_adds_everything():
    diff = snapshot_diff([], ROWS)
    assert len(diff.added) == 4 and not diff.removed
