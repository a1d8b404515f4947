"""Fitted sub-models on disk: written atomically, hashed, loaded with skops
against a server-side list of trusted types (never pickle, never
``trusted=True``: an artifact file is data, not code we agreed to run)."""

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import skops.io as sio
from django.conf import settings

from ml.ensemble import Ensemble
from ml.submodels import registered_types

from ..models import Artifact

# Types outside skops' own safe defaults that our fitted sub-models contain.
# tests/iterations/test_artifacts.py fits every built-in and checks that
# ``skops.io.get_untrusted_types`` stays within this list, so a library
# upgrade that adds a type fails a test instead of every load in production.
LIBRARY_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


class ArtifactError(ValueError):
    """An artifact file is missing, altered, or holds types we do not trust."""


def trusted_types() -> list[str]:
    # Built on call, not at import: a sub-model registered after start-up
    # (a data scientist's own class) is trusted once it is registered.
    return sorted(set(registered_types()) | set(LIBRARY_TYPES))


def artifact_path(*, version, key) -> Path:
    return Path("artifacts") / str(version.project_id) / f"v{version.number}" / f"{key}.skops"


def artifact_write(*, version, key, obj, fit_seconds=None, source=None) -> Artifact:
    """Serialise ``obj`` with skops to the version's directory and record it.

    The bytes go to a temporary file in the same directory, are fsynced and
    then renamed over the final name, so a reader (or a worker killed
    half-way) never sees a partial file under the artifact's name.
    """
    data = sio.dumps(obj)
    relative = artifact_path(version=version, key=key)
    final = Path(settings.MEDIA_ROOT) / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    artifact = Artifact(
        version=version,
        key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        source=source,
        fit_seconds=fit_seconds,
    )
    artifact.file.name = relative.as_posix()
    artifact.save()
    return artifact


def artifact_load(artifact: Artifact):
    """The object stored in ``artifact``, after checking its sha256."""
    path = Path(settings.MEDIA_ROOT) / artifact.file.name
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"artifact {artifact.key!r} of {artifact.version}: {error}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != artifact.sha256:
        raise ArtifactError(
            f"artifact {artifact.key!r} of {artifact.version} was altered: sha256 {digest} "
            f"does not match the recorded {artifact.sha256}"
        )
    trusted = trusted_types()
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(trusted))
    if untrusted:
        raise ArtifactError(
            f"artifact {artifact.key!r} of {artifact.version} contains types that are not "
            f"trusted: {untrusted}"
        )
    return sio.loads(data, trusted=trusted)


def combiner_state(ensemble: Ensemble) -> dict:
    """What the combiner artifact stores: plain values and the meta-model."""
    return {
        "combiner": ensemble.combiner_,
        "classes": np.asarray(ensemble.classes_, dtype=object),
        "keys": ensemble.keys,
        "weights": {k: float(v) for k, v in ensemble.weights.items()},
        "meta": ensemble.meta_,
    }


def ensemble_load(version, *, loaded=None) -> Ensemble:
    """A version's fitted ensemble, rebuilt from its artifacts.

    ``loaded`` (a dict, sha256 → object), when given, is filled and used:
    versions that share a reused sub-model then load its file once.
    """

    def load(artifact):
        if loaded is None:
            return artifact_load(artifact)
        if artifact.sha256 not in loaded:
            loaded[artifact.sha256] = artifact_load(artifact)
        return loaded[artifact.sha256]

    artifacts = {a.key: a for a in version.artifacts.all()}
    if Artifact.COMBINER not in artifacts:
        raise ArtifactError(f"{version} has no combiner artifact")
    state = load(artifacts[Artifact.COMBINER])
    missing = [k for k in state["keys"] if k not in artifacts]
    if missing:
        raise ArtifactError(f"{version} lacks the artifact(s) of {missing}")
    submodels = [load(artifacts[k]) for k in state["keys"]]
    ensemble = Ensemble(submodels, weights=state["weights"])
    ensemble.classes_ = np.asarray(state["classes"], dtype=object)
    ensemble.combiner_ = state["combiner"]
    ensemble.meta_ = state["meta"]
    return ensemble
