"""Stable hashes of sample content and the train/holdout split."""

import hashlib
import json


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def content_hash(data) -> str:
    """Two samples with equal data (whatever the key order) share this hash."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def split_for(external_id: str, holdout_fraction: float) -> str:
    """ "holdout" or "train", decided by a hash of the id alone, so it never changes."""
    digest = hashlib.sha256(str(external_id).encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "holdout" if position < holdout_fraction else "train"
