"""The regression test on real reviews: versions trained by the real training
path, re-scored on the current holdout, compared, gated and written once."""

import json
from io import StringIO
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from kombu.exceptions import OperationalError

from iterations.models import Artifact, Iteration, ModelSettings, ModelVersion, RegressionReport
from iterations.services.artifacts import ensemble_load
from iterations.services.iterations import iteration_create, iteration_retrain
from iterations.services.regression import (
    GatesError,
    Holdout,
    RegressionError,
    gates_parse,
    regression_request,
    regression_run,
)
from iterations.services.training import training_request, training_run
from iterations.tasks import regression_run_task
from labelling.models import Flag, Sample
from leanml_site.models import AuditEvent
from ml.gates import GateConfig
from ml.hashing import content_hash
from tests.factories import LabelClassFactory

from .conftest import add_samples, review_rows

VERSION_KEYS = {
    "number",
    "role",
    "status",
    "created_at",
    "metrics",
    "slices",
    "value_per_1000",
    "beats_baseline",
    "latency_ms_per_1000",
    "artifact_bytes",
    "error",
}


# Every test here may write artifacts: each in its own folder.
pytestmark = pytest.mark.usefixtures("media")


def train(reviews, **kwargs):
    job = training_request(project=reviews.project, by=reviews.user, queue=False, **kwargs)
    job = training_run(job_id=job.pk)
    assert job.state == "succeeded", job.error
    return ModelVersion.objects.get(pk=job.version_id)


def promote(version, status="production"):
    ModelVersion.objects.filter(pk=version.pk).update(status=status)
    version.refresh_from_db()
    return version


def set_settings(project, **fields):
    ModelSettings.objects.update_or_create(project=project, defaults=fields)


@pytest.fixture
def two_versions(reviews):
    """v1 in production; v2 a candidate trained with another seed after a
    third of the training labels were turned to "other" (so the two differ)."""
    v1 = promote(train(reviews))
    train_ids = list(
        Sample.objects.filter(project=reviews.project, split="train")
        .order_by("id")
        .values_list("id", flat=True)
    )
    Sample.objects.filter(pk__in=train_ids[::3]).update(consensus_label=reviews.classes["other"])
    v2 = train(reviews, seed=3)
    return v1, v2


def test_a_first_model_is_reported_with_nothing_to_compare(reviews):
    version = train(reviews)
    report = regression_run(version_id=version.pk, by=reviews.user)

    payload = report.payload
    holdout = Holdout(reviews.project)
    assert payload["schema"] == 1
    assert payload["classes"] == ["great", "other"]
    assert payload["holdout"] == {"n": len(holdout), "hash": holdout.hash}
    assert (payload["candidate"], payload["production"]) == (version.number, None)
    assert payload["value"] is None and payload["comparison"] is None
    (entry,) = payload["versions"]
    assert set(entry) == VERSION_KEYS
    assert (entry["role"], entry["status"], entry["error"]) == ("candidate", "candidate", None)
    assert entry["metrics"]["n"] == len(holdout) > 0
    assert entry["latency_ms_per_1000"] > 0
    assert entry["artifact_bytes"] == sum(a.size_bytes for a in version.artifacts.all())
    assert payload["gates"]["passed"] is True
    (gate,) = payload["gates"]["results"]
    assert gate["name"] == "first_model" and "no production model" in gate["sentence"]
    assert set(payload["timings"]) == {"load_s", "score_s", "bootstrap_s", "slices_s", "total_s"}
    assert report.passed is True
    assert report.content_hash == content_hash({k: v for k, v in payload.items() if k != "timings"})
    assert list(report.compared.all()) == [version]
    assert AuditEvent.objects.filter(action="regression.report", target_id=str(report.pk)).exists()


def test_metrics_are_those_of_the_loaded_model_on_the_holdout(two_versions, reviews):
    v1, v2 = two_versions
    report = regression_run(version_id=v2.pk)
    holdout = Holdout(reviews.project)
    for entry, version in zip(report.payload["versions"], (v2, v1), strict=True):
        predicted = ensemble_load(version).predict(holdout.frame)
        accuracy = float((predicted == holdout.labels).mean())
        assert entry["metrics"]["accuracy"] == pytest.approx(accuracy)
        confusion = np.array(entry["metrics"]["confusion"])
        assert confusion.sum() == len(holdout)
        assert np.trace(confusion) == round(accuracy * len(holdout))


def test_candidate_is_compared_with_production(two_versions, reviews):
    v1, v2 = two_versions
    report = regression_run(version_id=v2.pk)
    payload = report.payload

    assert (payload["candidate"], payload["production"]) == (2, 1)
    assert [(e["number"], e["role"]) for e in payload["versions"]] == [
        (2, "candidate"),
        (1, "production"),
    ]
    assert report.baseline == v1
    assert set(report.compared.all()) == {v1, v2}
    comparison = payload["comparison"]
    assert comparison["against"] == 1
    bootstrap = comparison["bootstrap"]
    assert (bootstrap["n_resamples"], bootstrap["seed"], bootstrap["confidence"]) == (2000, 3, 0.95)
    assert set(bootstrap["metrics"]) == {"accuracy", "macro_f1"}
    accuracy = bootstrap["metrics"]["accuracy"]
    assert accuracy["a"] == pytest.approx(payload["versions"][1]["metrics"]["accuracy"])
    assert accuracy["b"] == pytest.approx(payload["versions"][0]["metrics"]["accuracy"])
    for ci in bootstrap["metrics"].values():
        assert ci["difference"] == pytest.approx(ci["b"] - ci["a"])
        assert ci["low"] <= ci["difference"] <= ci["high"]
    for row, label in zip(comparison["per_class"], ["great", "other"], strict=True):
        assert row["label"] == label
        assert row["low"] <= row["difference"] <= row["high"]
    flips = comparison["flips"]
    assert flips["fixed_count"] + flips["broken_count"] > 0, "the two versions should differ"
    mcnemar = comparison["mcnemar"]
    assert (mcnemar["b"], mcnemar["c"], mcnemar["n"]) == (
        flips["broken_count"],
        flips["fixed_count"],
        payload["holdout"]["n"],
    )
    assert 0 <= mcnemar["p_value"] <= 1
    for flip in flips["fixed"]:
        sample = Sample.objects.get(pk=flip["sample_id"])
        assert sample.external_id == flip["external_id"]
        assert sample.consensus_label.name == flip["true"] == flip["after"] != flip["before"]
        assert 0.5 <= flip["confidence_after"] <= 1
    for flip in flips["broken"]:
        assert flip["true"] == flip["before"] != flip["after"]
    # The default gates (no gain matrix: no value gate).
    names = [g["name"] for g in payload["gates"]["results"]]
    assert names == ["recall_not_dropped", "accuracy_not_worse", "macro_f1_not_worse"]


def test_flips_are_counted_in_full_and_listed_up_to_the_limit(two_versions, reviews):
    _, v2 = two_versions
    with mock.patch("iterations.services.regression.FLIPS_LISTED", 1):
        payload = regression_run(version_id=v2.pk).payload
    flips = payload["comparison"]["flips"]
    assert len(flips["fixed"]) == min(1, flips["fixed_count"])
    assert len(flips["broken"]) == min(1, flips["broken_count"])


def test_past_versions_are_rescored_on_the_current_holdout(two_versions, reviews):
    v1, v2 = two_versions
    before = regression_run(version_id=v2.pk)
    # More labels arrive (some in the holdout), and one holdout sample gets flagged.
    add_samples(
        reviews.project,
        reviews.classes,
        [(f"new{external_id}", data, label) for external_id, data, label in review_rows(400)[200:]],
    )
    flagged = Sample.objects.filter(project=reviews.project, split="holdout").first()
    Flag.objects.create(sample=flagged, kind="ambiguous", created_by=reviews.user)

    after = regression_run(version_id=v2.pk)

    assert after.pk != before.pk
    n_before, n_after = before.payload["holdout"]["n"], after.payload["holdout"]["n"]
    assert n_after > n_before
    assert after.holdout_hash != before.holdout_hash
    assert after.payload["holdout"]["n"] == (
        Sample.objects.filter(project=reviews.project, split="holdout")
        .exclude(pk=flagged.pk)
        .count()
    )
    for entry in after.payload["versions"]:
        assert entry["metrics"]["n"] == n_after
    assert flagged.pk not in {
        f["sample_id"]
        for f in after.payload["comparison"]["flips"]["fixed"]
        + after.payload["comparison"]["flips"]["broken"]
    }


def test_an_identical_rerun_returns_the_same_report(two_versions):
    _, v2 = two_versions
    first = regression_run(version_id=v2.pk)
    second = regression_run(version_id=v2.pk)
    assert second.pk == first.pk
    assert RegressionReport.objects.filter(candidate=v2).count() == 1
    assert AuditEvent.objects.filter(action="regression.report").count() == 2


def test_a_report_is_immutable(two_versions):
    _, v2 = two_versions
    report = regression_run(version_id=v2.pk)
    report.passed = not report.passed
    with pytest.raises(ValueError, match="immutable"):
        report.save()
    report.refresh_from_db()
    assert report.passed == report.payload["gates"]["passed"]


def test_strict_gates_fail_with_their_numbers(two_versions, reviews):
    _, v2 = two_versions
    set_settings(
        reviews.project,
        gates=[
            {"gate": "max_latency_ms_per_1000", "ms": 0},
            {"gate": "max_recall_drop", "points": 100},
        ],
    )
    report = regression_run(version_id=v2.pk)
    assert report.passed is False
    # In ml.gates' order, whatever the order of the settings.
    recall, latency = report.payload["gates"]["results"]
    assert (latency["name"], latency["passed"], latency["threshold"]) == ("latency_under", False, 0)
    assert latency["value"] == report.payload["versions"][0]["latency_ms_per_1000"]
    assert "over the limit of 0 ms" in latency["sentence"]
    assert (recall["name"], recall["passed"]) == ("recall_not_dropped", True)


def test_a_value_gate_without_a_gain_matrix_fails_and_says_so(two_versions, reviews):
    _, v2 = two_versions
    set_settings(reviews.project, gates=[{"gate": "value_not_worse", "margin": 0}])
    report = regression_run(version_id=v2.pk)
    (gate,) = report.payload["gates"]["results"]
    assert gate["passed"] is False and "set a gain matrix" in gate["sentence"]


def test_value_per_1000_and_the_baseline(two_versions, reviews):
    _, v2 = two_versions
    gains = {"great": {"great": 2, "other": -1}, "other": {"great": -5, "other": 1}}
    set_settings(reviews.project, gain_matrix=gains, useful_baseline=-1000.0, value_unit="USD")
    payload = regression_run(version_id=v2.pk).payload
    assert payload["value"] == {"unit": "USD", "baseline": -1000.0}
    holdout = Holdout(reviews.project)
    for entry in payload["versions"]:
        confusion = np.array(entry["metrics"]["confusion"])
        expected = 1000 * (confusion * np.array([[2, -1], [-5, 1]])).sum() / len(holdout)
        assert entry["value_per_1000"] == pytest.approx(expected)
        assert entry["beats_baseline"] is True
    value = payload["comparison"]["bootstrap"]["metrics"]["value_per_1000"]
    assert value["low"] <= value["difference"] <= value["high"]
    gate = payload["gates"]["results"][0]
    assert (gate["name"], gate["threshold"]) == ("value_not_worse", 0)


def test_the_stored_payload_still_matches_its_hash(two_versions, reviews):
    """A margin of 0 makes a threshold of -0.0, which PostgreSQL's jsonb
    would store as 0: the payload is written without negative zeros."""
    _, v2 = two_versions
    set_settings(
        reviews.project,
        gain_matrix={"great": {"great": 1}, "other": {"other": 1}},
        gates=[{"gate": "value_not_worse", "margin": 0}],
    )
    report = regression_run(version_id=v2.pk)
    stored = RegressionReport.objects.get(pk=report.pk).payload
    assert content_hash({k: v for k, v in stored.items() if k != "timings"}) == (
        report.content_hash
    )
    assert "-0.0" not in json.dumps(stored)
    assert regression_run(version_id=v2.pk).pk == report.pk


def test_slices_cover_the_holdout(two_versions, reviews):
    _, v2 = two_versions
    set_settings(reviews.project, slice_fields=["product"])
    payload = regression_run(version_id=v2.pk).payload
    holdout = Holdout(reviews.project)
    for entry in payload["versions"]:
        rows = entry["slices"]["product"]
        assert sum(r["n"] for r in rows) == len(holdout)
        assert {r["value"] for r in rows} == set(holdout.frame["product"])


def test_earlier_versions_are_scored_newest_first_up_to_compare_last(reviews):
    v1 = promote(train(reviews), "rejected")
    v2 = promote(train(reviews, seed=1), "approved")
    v3 = promote(train(reviews, seed=2), "production")
    promote(train(reviews, seed=4), "rejected")  # v4
    v5 = train(reviews, seed=5)
    set_settings(reviews.project, compare_last=2)
    payload = regression_run(version_id=v5.pk).payload
    assert [(e["number"], e["role"]) for e in payload["versions"]] == [
        (5, "candidate"),
        (3, "production"),
        (4, "earlier"),
        (2, "earlier"),
    ]
    assert v1.number not in [e["number"] for e in payload["versions"]]
    assert payload["production"] == v3.number and v2.number == 2


def test_a_version_whose_artifact_is_missing_is_listed_with_the_error(reviews, media):
    v1 = promote(train(reviews), "approved")
    v2 = train(reviews, seed=1)  # all sub-models refitted: nothing shared with v1
    text = v1.artifacts.get(key="text")
    (Path(media) / text.file.name).unlink()

    report = regression_run(version_id=v2.pk)

    candidate, earlier = report.payload["versions"]
    assert candidate["error"] is None and candidate["metrics"] is not None
    assert earlier["number"] == 1 and earlier["role"] == "earlier"
    assert "text" in earlier["error"] and "No such file" in earlier["error"]
    assert earlier["metrics"] is None and earlier["latency_ms_per_1000"] is None
    assert list(report.compared.all()) == [v2]


def test_a_production_model_that_cannot_be_loaded_fails_the_gates(two_versions, media):
    v1, v2 = two_versions
    combiner = v1.artifacts.get(key=Artifact.COMBINER)
    (Path(media) / combiner.file.name).write_bytes(b"altered")
    report = regression_run(version_id=v2.pk)
    assert report.payload["comparison"] is None
    assert report.passed is False
    (gate,) = report.payload["gates"]["results"]
    assert "version 1" in gate["sentence"] and "altered" in gate["sentence"]


def test_a_candidate_that_cannot_be_loaded_is_a_clear_error(reviews, media):
    version = train(reviews)
    (Path(media) / version.artifacts.get(key="text").file.name).unlink()
    with pytest.raises(RegressionError, match="Version 1 could not be loaded"):
        regression_run(version_id=version.pk)
    assert not RegressionReport.objects.exists()


@pytest.mark.parametrize("status", ["training", "failed"])
def test_an_untrained_version_cannot_be_tested(reviews, status):
    version = promote(train(reviews), status)
    with pytest.raises(RegressionError, match=f"Version 1 is {status}"):
        regression_run(version_id=version.pk)
    with pytest.raises(RegressionError, match="only a trained version"):
        regression_request(version=version, by=reviews.user)
    assert not RegressionReport.objects.exists()


def test_an_empty_holdout_is_a_clear_error(reviews):
    version = train(reviews)
    Sample.objects.filter(project=reviews.project, split="holdout").update(status="excluded")
    with pytest.raises(RegressionError, match="no holdout samples"):
        regression_run(version_id=version.pk)


def test_a_holdout_class_the_model_never_saw_is_a_clear_error(reviews):
    version = train(reviews)
    meh = LabelClassFactory(project=reviews.project, name="meh", order=2)
    sample = Sample.objects.filter(project=reviews.project, split="holdout").first()
    Sample.objects.filter(pk=sample.pk).update(consensus_label=meh)
    with pytest.raises(RegressionError, match=r"class\(es\) \['meh'\] that version 1"):
        regression_run(version_id=version.pk)


def test_settings_that_do_not_fit_the_data_are_clear_errors(reviews):
    version = train(reviews)
    set_settings(reviews.project, slice_fields=["country"])
    with pytest.raises(RegressionError, match="Slice field 'country'"):
        regression_run(version_id=version.pk)
    set_settings(reviews.project, slice_fields=[], gain_matrix={"great": {"bad": 1}})
    with pytest.raises(RegressionError, match="gain matrix does not fit.*'bad'"):
        regression_run(version_id=version.pk)
    set_settings(reviews.project, gain_matrix={}, gates=[{"gate": "speed"}])
    with pytest.raises(RegressionError, match="gates are not valid.*unknown gate 'speed'"):
        regression_run(version_id=version.pk)
    assert not RegressionReport.objects.exists()


def test_gates_parse_reads_every_gate():
    config = gates_parse(
        [
            {"gate": "value_not_worse", "margin": 2},
            {"gate": "max_recall_drop", "points": 5},
            {"gate": "max_latency_ms_per_1000", "ms": 50},
            {"gate": "accuracy_not_worse", "tolerance": 0.01},
            {"gate": "macro_f1_not_worse", "tolerance": 0},
        ]
    )
    assert config == GateConfig(2.0, 5.0, 50.0, 0.01, 0.0)
    # Gates not listed are off; empty means the defaults.
    assert gates_parse('[{"gate": "max_recall_drop", "points": 3}]') == GateConfig(
        None, 3.0, None, None, None
    )
    assert gates_parse([]) == gates_parse("") == GateConfig()


@pytest.mark.parametrize(
    "value, message",
    [
        ("[{", "Gates must be JSON"),
        ({"gate": "max_recall_drop"}, "must be a list"),
        (["max_recall_drop"], "Gate 1 must be an object"),
        ([{"points": 5}], "Gate 1: unknown gate None"),
        ([{"gate": "speed", "ms": 1}], "Gate 1: unknown gate 'speed'"),
        ([{"gate": "max_recall_drop"}], "Gate 'max_recall_drop': give its 'points'"),
        ([{"gate": "max_recall_drop", "ms": 5}], "Gate 'max_recall_drop': unknown key"),
        ([{"gate": "max_recall_drop", "points": "5"}], "'points' must be a number, got '5'"),
        ([{"gate": "max_recall_drop", "points": True}], "'points' must be a number"),
        ([{"gate": "max_recall_drop", "points": -1}], "at least 0, got -1"),
        ([{"gate": "value_not_worse", "margin": float("nan")}], "'margin' must be a finite"),
        ([{"gate": "accuracy_not_worse", "tolerance": 5}], "fraction"),
        (
            [{"gate": "max_recall_drop", "points": 5}, {"gate": "max_recall_drop", "points": 1}],
            "listed twice",
        ),
    ],
)
def test_gates_parse_names_the_gate_and_key_at_fault(value, message):
    with pytest.raises(GatesError, match=message.replace("(", r"\(").replace("[", r"\[")):
        gates_parse(value)
    assert issubclass(GatesError, ValueError)


def test_the_iteration_becomes_ready_when_its_report_is_written(reviews):
    iteration = iteration_create(
        project=reviews.project, by=reviews.user, title="More data", hypothesis="More is better"
    )
    job = iteration_retrain(iteration=iteration, by=reviews.user, queue=False)
    training_run(job_id=job.pk)
    report = regression_run(version_id=job.version_id)
    iteration.refresh_from_db()
    assert iteration.status == Iteration.Status.READY
    assert report.candidate_id == iteration.candidate_id


def test_training_queues_the_test_after_commit(reviews, django_capture_on_commit_callbacks):
    job = training_request(project=reviews.project, by=reviews.user, queue=False)
    with (
        mock.patch.object(regression_run_task, "delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        training_run(job_id=job.pk)
    delay.assert_called_once_with(job.version_id, None)


def test_a_broker_down_after_training_leaves_the_candidate(
    reviews, django_capture_on_commit_callbacks
):
    job = training_request(project=reviews.project, by=reviews.user, queue=False)
    with (
        mock.patch.object(regression_run_task, "delay", side_effect=OperationalError("down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = training_run(job_id=job.pk)
    assert job.state == "succeeded"
    assert ModelVersion.objects.get(pk=job.version_id).status == "candidate"


def test_a_request_queues_the_task_or_says_the_broker_is_down(reviews):
    version = train(reviews)
    with mock.patch.object(regression_run_task, "delay") as delay:
        regression_request(version=version, by=reviews.user)
    delay.assert_called_once_with(version.pk, reviews.user.pk)
    assert AuditEvent.objects.filter(action="regression.request").count() == 1
    with (
        mock.patch.object(regression_run_task, "delay", side_effect=OperationalError("refused")),
        pytest.raises(RegressionError, match="task queue is unreachable.*refused"),
    ):
        regression_request(version=version, by=reviews.user)
    assert AuditEvent.objects.filter(action="regression.request").count() == 1


def test_the_task_runs_the_test(reviews):
    version = train(reviews)
    result = regression_run_task.apply(args=(version.pk, reviews.user.pk)).get()
    report = RegressionReport.objects.get(pk=result["report"])
    assert result == {"report": report.pk, "content_hash": report.content_hash, "passed": True}
    event = AuditEvent.objects.get(action="regression.report")
    assert event.actor == reviews.user
    assert regression_run_task.acks_late and regression_run_task.reject_on_worker_lost
    assert regression_run_task.time_limit > regression_run_task.soft_time_limit > 0


def test_a_test_that_cannot_run_is_recorded_for_the_page(reviews):
    version = train(reviews)
    set_settings(reviews.project, slice_fields=["country"])
    assert regression_run_task.apply(args=(version.pk, reviews.user.pk)).get() == {"report": None}
    event = AuditEvent.objects.get(action="regression.failed")
    assert (event.target_id, event.actor) == (str(version.pk), reviews.user)
    assert "Slice field 'country'" in event.after["message"]
    assert not RegressionReport.objects.exists()


def test_the_task_is_routed_to_the_training_queue(settings):
    assert settings.CELERY_TASK_ROUTES["iterations.regression_run"] == {"queue": "training"}


def test_the_command_reruns_the_test(two_versions, reviews):
    out = StringIO()
    call_command("regression", str(reviews.project.pk), stdout=out)
    report = RegressionReport.objects.get()
    assert report.candidate.number == 2
    text = out.getvalue()
    assert f"Report {report.content_hash[:12]} for version 2" in text
    assert "v1 (production)" in text
    call_command("regression", str(reviews.project.pk), "1", stdout=StringIO())
    assert RegressionReport.objects.filter(candidate__number=1).count() == 1
    with mock.patch.object(regression_run_task, "delay") as delay:
        call_command("regression", str(reviews.project.pk), "2", "--queue", stdout=out)
    delay.assert_called_once_with(two_versions[1].pk, None)
    assert "Regression test of version 2 queued." in out.getvalue()
    with pytest.raises(CommandError, match="has no version 9"):
        call_command("regression", str(reviews.project.pk), "9")
    with pytest.raises(CommandError, match="no project with id"):
        call_command("regression", "999999")
