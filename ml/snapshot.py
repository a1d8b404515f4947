"""Dataset snapshots: the frozen (sample, revision, label, split) rows a
model is trained and tested on, their content hash, and the diff between two."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .hashing import canonical_json

COLUMNS = ("external_id", "revision", "label", "split")


@dataclass(frozen=True)
class ClassChange:
    label: object
    old: int  # rows with this label in the old snapshot
    new: int
    added: int  # new samples with this label
    removed: int  # samples that left the snapshot with this label
    relabelled_in: int  # samples whose label changed to this one
    relabelled_out: int  # samples whose label changed from this one


@dataclass(frozen=True)
class SnapshotDiff:
    added: list[tuple]  # (external_id, label)
    removed: list[tuple]  # (external_id, label): excluded, flagged or deleted since
    relabelled: list[tuple]  # (external_id, old label, new label)
    corrected: list[tuple]  # (external_id, old revision, new revision)
    per_class: list[ClassChange] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.relabelled or self.corrected)


def snapshot_rows(rows) -> pd.DataFrame:
    """Rows (a DataFrame, mappings, or 4-tuples in COLUMNS order) as a frame
    indexed by external_id; repeated ids are an error."""
    if isinstance(rows, pd.DataFrame):
        missing = [c for c in COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"snapshot rows need the columns {list(COLUMNS)}; missing {missing}")
        frame = rows.loc[:, list(COLUMNS)].copy()
    else:
        records = []
        for number, row in enumerate(rows, start=1):
            if isinstance(row, Mapping):
                missing = [c for c in COLUMNS if c not in row]
                if missing:
                    raise ValueError(f"snapshot row {number} lacks {missing}")
                records.append(tuple(row[c] for c in COLUMNS))
            else:
                row = tuple(row)
                if len(row) != len(COLUMNS):
                    raise ValueError(
                        f"snapshot row {number} has {len(row)} values, expected {list(COLUMNS)}"
                    )
                records.append(row)
        frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    frame = frame.astype(object)
    frame["external_id"] = frame["external_id"].map(str)
    repeated = frame["external_id"][frame["external_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"external_id repeated in the snapshot: {sorted(set(repeated))[:5]}")
    return frame.set_index("external_id")


def snapshot_hash(rows) -> str:
    """SHA-256 of the rows sorted by external_id: identical data (in any
    order) gives the identical hash; any changed id, revision, label or split
    changes it."""
    frame = snapshot_rows(rows).sort_index()
    digest = hashlib.sha256()
    for external_id, revision, label, split in frame.itertuples(name=None):
        values = [external_id, _plain(revision), _plain(label), _plain(split)]
        digest.update(canonical_json(values).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def snapshot_diff(old_rows, new_rows) -> SnapshotDiff:
    """What changed from the ``old`` snapshot (e.g. production's) to the ``new`` one."""
    old = snapshot_rows(old_rows)
    new = snapshot_rows(new_rows)
    added_ids = new.index.difference(old.index, sort=False)
    removed_ids = old.index.difference(new.index, sort=False)
    common = old.index.intersection(new.index, sort=False)
    o, n = old.loc[common], new.loc[common]
    relabel = (o["label"] != n["label"]).to_numpy()
    corrected = (o["revision"] != n["revision"]).to_numpy()

    def ordered(ids):
        return sorted(ids, key=str)

    added = [(i, new.at[i, "label"]) for i in ordered(added_ids)]
    removed = [(i, old.at[i, "label"]) for i in ordered(removed_ids)]
    relabelled = [(i, o.at[i, "label"], n.at[i, "label"]) for i in ordered(common[relabel])]
    fixed = [(i, o.at[i, "revision"], n.at[i, "revision"]) for i in ordered(common[corrected])]

    labels = sorted(set(old["label"]) | set(new["label"]), key=str)
    old_counts, new_counts = old["label"].value_counts(), new["label"].value_counts()
    added_n = Counter(x for _, x in added)
    removed_n = Counter(x for _, x in removed)
    in_n = Counter(x for _, _, x in relabelled)
    out_n = Counter(x for _, x, _ in relabelled)
    per_class = [
        ClassChange(
            label=label,
            old=int(old_counts.get(label, 0)),
            new=int(new_counts.get(label, 0)),
            added=added_n[label],
            removed=removed_n[label],
            relabelled_in=in_n[label],
            relabelled_out=out_n[label],
        )
        for label in labels
    ]
    return SnapshotDiff(added, removed, relabelled, fixed, per_class)


def _plain(value):
    # numpy scalars would serialise through str() (np.int64(3) vs 3 differ
    # only by type), so the same data read two ways could hash differently.
    return value.item() if isinstance(value, np.generic) else value
