"""Suspected label errors among the labels the production model learnt from.

Confident learning (``ml.surfacing.label_error``) on the out-of-fold
probabilities the ensemble stored when it was fitted: each sub-model's
``oof_`` (stacking stores them; a model combined by soft voting has none),
combined the way the ensemble combines its sub-models. A label is suspected
when another class gets more of the out-of-fold probability than that class
typically gets on its own samples.

Suspects go to a review list, not back to the labelling queue: the queue
would hand them to annotators as new work, and the person who gave the
label would be asked the same question again. On the review list an expert
or owner who did not label the sample settles it through labelling's
adjudication (``sample_adjudicate``), which records who decided and why.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelling.models import Adjudication, Annotation, Sample
from ml import surfacing as strategies
from ml.submodels.base import align_proba

from .surfacing import production_version

SETTLED = (Sample.Consensus.ADJUDICATED, Sample.Consensus.GOLD)


class LabelErrorsUnavailable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclass
class Suspect:
    sample: Sample
    given: str
    suggested: str
    score: float
    reason: str
    labelled_by: list  # user ids whose current answer is a label


def _oof(ensemble):
    """(external ids, combined out-of-fold probabilities) of the training rows."""
    missing = [m.key for m in ensemble.submodels if getattr(m, "oof_", None) is None]
    if missing:
        raise LabelErrorsUnavailable(
            "The production model stores no out-of-fold probabilities for "
            f"{', '.join(missing)} (it was combined by soft voting, used when a class "
            "has too few labels for stacking), so label errors cannot be judged "
            "without refitting."
        )
    first = ensemble.submodels[0].oof_
    ids = pd.Index(first["ids"]).astype(str)
    parts = {}
    for model in ensemble.submodels:
        stored = model.oof_
        position = pd.Index(stored["ids"]).astype(str).get_indexer(ids)
        if (position < 0).any():
            raise LabelErrorsUnavailable(
                f"The sub-models' stored out-of-fold rows differ ({model.key} lacks some)."
            )
        parts[model.key] = align_proba(
            stored["proba"][position], stored["classes"], ensemble.classes_
        )
    return ids, ensemble.combine(parts, len(ids))


def label_error_suspects(*, project, limit=200) -> tuple[object, list[Suspect]]:
    """(production version, suspects best first) — labels a person has
    settled since the version was trained, or that changed since, are left out."""
    from iterations.services.artifacts import ensemble_load
    from iterations.services.training import snapshot_train_frame

    version = production_version(project)
    if version is None:
        raise LabelErrorsUnavailable("The project has no production model to judge labels with.")
    ensemble = ensemble_load(version)
    ids, proba = _oof(ensemble)
    _frame, labels = snapshot_train_frame(version.snapshot)
    given = pd.Series(np.asarray(labels, dtype=object), index=_frame.index.astype(str))
    known = ids.isin(given.index)
    ids, proba = ids[known], proba[known]
    classes = [str(c) for c in ensemble.classes_]
    scored = strategies.label_error(proba, classes, given.loc[ids].tolist())
    order = [
        i
        for i in np.argsort(-np.nan_to_num(scored.scores, nan=-np.inf))
        if not np.isnan(scored.scores[i])
    ]
    if not order:
        return version, []
    wanted = [ids[i] for i in order[: limit * 2]]
    samples = {
        s.external_id: s
        for s in Sample.objects.filter(project=project, external_id__in=wanted).select_related(
            "consensus_label"
        )
    }
    settled_after = set(
        Adjudication.objects.filter(
            sample__in=samples.values(), created_at__gt=version.created_at
        ).values_list("sample_id", flat=True)
    )
    suspects = []
    for i in order:
        sample = samples.get(ids[i])
        if sample is None or sample.consensus_label is None:
            continue
        given_label = given.loc[ids[i]]
        if sample.consensus_label.name != given_label:
            continue  # relabelled since the model was trained
        if sample.consensus_state in SETTLED and sample.pk in settled_after:
            continue
        suggested = classes[
            int(np.argmax(np.where(np.array(classes) == given_label, -1, proba[i])))
        ]
        suspects.append(
            Suspect(sample, given_label, suggested, float(scored.scores[i]), scored.reasons[i], [])
        )
        if len(suspects) >= limit:
            break
    labellers = {}
    for sample_id, annotator_id in Annotation.objects.filter(
        sample__in=[s.sample for s in suspects], kind=Annotation.Kind.LABEL
    ).values_list("sample_id", "annotator_id"):
        labellers.setdefault(sample_id, set()).add(annotator_id)
    for suspect in suspects:
        suspect.labelled_by = sorted(labellers.get(suspect.sample.pk, ()))
    return version, suspects
