"""Incremental metric windows: what a run folds in must equal a recomputation
from all logs, whatever order logs and ground truth arrive in."""

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from iterations.models import ModelSettings
from ml.windows import Aggregate, aggregate, summarise
from monitoring.models import GroundTruth, MetricWindow, MonitoringCursor, PredictionLog
from monitoring.services import metrics
from monitoring.services.metrics import metrics_update

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
GAINS = {"great": {"great": 3.0, "other": -1.0}, "other": {"great": -8.0, "other": 0.0}}


@pytest.fixture
def gains(team):
    ModelSettings.objects.create(project=team.project, gain_matrix=GAINS, useful_baseline=100)


def make_logs(project, versions, start, count, *, seed=0, countries=("DE", "FR", "US")):
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + count):
        confidence = rng.uniform(0.5, 1.0)
        predicted = rng.choice(["great", "other"])
        rows.append(
            PredictionLog(
                project=project,
                request_id=f"r{i}",
                # Spread over three hours across midnight, so hour and day windows differ.
                timestamp=T0 + timedelta(minutes=rng.randrange(180)),
                model_version=versions[i % 2],
                data={"review": f"text {i}"},
                predicted=predicted,
                probabilities={predicted: confidence, "x": 1 - confidence},
                confidence=confidence,
                latency_ms=None if i % 7 == 0 else rng.uniform(2, 200),
                segment={"country": rng.choice(countries)} if i % 5 else None,
                received_at=T0,
            )
        )
    PredictionLog.objects.bulk_create(rows)


def add_truth(project, request_id, label, source="feedback", minutes=0):
    return GroundTruth.objects.create(
        project=project,
        request_id=request_id,
        label=label,
        source=source,
        created_at=T0 + timedelta(days=1, minutes=minutes),
    )


def stored(project):
    return {
        (w.model_version_id, w.granularity, w.start, w.segment): w.aggregate
        for w in MetricWindow.objects.filter(project=project)
    }


def recomputed(project, gains=None):
    """Every window from scratch: all logs, each with the ground truth that
    counts for it (selectors' rule), independent of the service's code path."""
    from monitoring.selectors import ground_truth_latest

    logs = list(PredictionLog.objects.filter(project=project).order_by("id"))
    truth = ground_truth_latest(project=project, request_ids=[log.request_id for log in logs])
    groups = {}
    for log in logs:
        hour = log.timestamp.replace(minute=0, second=0, microsecond=0)
        day = hour.replace(hour=0)
        segments = [""] + [f"{k}={v}" for k, v in sorted((log.segment or {}).items())]
        for granularity, start in (("hour", hour), ("day", day)):
            for segment in segments:
                groups.setdefault((log.model_version_id, granularity, start, segment), []).append(
                    log
                )
    out = {}
    for key, members in groups.items():
        out[key] = aggregate(
            [m.predicted for m in members],
            [m.confidence for m in members],
            [m.latency_ms if m.latency_ms is not None else float("nan") for m in members],
            true=[truth[m.request_id].label if m.request_id in truth else None for m in members],
            gain_matrix=gains,
        ).as_dict()
    return out


def assert_same(project, gains=None):
    got, want = stored(project), recomputed(project, gains)
    assert set(got) == set(want)
    for key, expected in want.items():
        actual = dict(got[key])
        for name in ("gain_sum", "gain_sq_sum"):
            assert actual.pop(name) == pytest.approx(expected.pop(name), abs=1e-9), key
        assert actual == expected, key


def test_it_folds_new_logs_in_several_runs_like_in_one(team, versions, gains):
    make_logs(team.project, versions, 0, 300)
    for i in range(0, 300, 3):
        add_truth(team.project, f"r{i}", "great" if i % 2 else "other")
    first = metrics_update(project=team.project, chunk_size=70)
    assert (first.logs, first.truth) == (300, 100)
    make_logs(team.project, versions, 300, 150, seed=1)
    for i in range(1, 450, 4):
        add_truth(team.project, f"r{i}", "other", source="outcome")
    second = metrics_update(project=team.project, chunk_size=40)
    assert second.logs == 150
    assert_same(team.project, GAINS)

    # The same logs and ground truth folded by one run from an empty cursor.
    incremental = stored(team.project)
    MetricWindow.objects.filter(project=team.project).delete()
    MonitoringCursor.objects.filter(project=team.project).delete()
    metrics_update(project=team.project)
    once = stored(team.project)
    assert set(once) == set(incremental)
    for key in once:
        assert once[key]["gain_sum"] == pytest.approx(incremental[key]["gain_sum"])
        assert {k: v for k, v in once[key].items() if not k.startswith("gain_s")} == {
            k: v for k, v in incremental[key].items() if not k.startswith("gain_s")
        }


def test_a_rerun_changes_nothing(team, versions, gains):
    make_logs(team.project, versions, 0, 50)
    add_truth(team.project, "r3", "great")
    metrics_update(project=team.project)
    before = {w.pk: w.aggregate for w in MetricWindow.objects.all()}
    again = metrics_update(project=team.project)
    assert (again.logs, again.truth, again.windows) == (0, 0, 0)
    assert {w.pk: w.aggregate for w in MetricWindow.objects.all()} == before


def day_total(project, version):
    rows = MetricWindow.objects.filter(
        project=project, model_version=version, granularity="day", segment=""
    )
    total = Aggregate()
    for row in rows:
        total = total + Aggregate.from_dict(row.aggregate)
    return total


def test_late_ground_truth_joins_its_windows(team, versions, gains):
    make_logs(team.project, versions, 0, 20)
    metrics_update(project=team.project)
    log = PredictionLog.objects.get(request_id="r2")
    assert day_total(team.project, log.model_version).labelled == 0
    add_truth(team.project, "r2", log.predicted)
    run = metrics_update(project=team.project)
    assert (run.logs, run.truth, run.truth_changed) == (0, 1, 1)
    total = day_total(team.project, log.model_version)
    assert (total.labelled, total.correct) == (1, 1)
    assert total.gain_sum == GAINS[log.predicted][log.predicted]
    assert_same(team.project, GAINS)


def test_a_higher_priority_source_replaces_the_earlier_ground_truth(team, versions, gains):
    make_logs(team.project, versions, 0, 20)
    log = PredictionLog.objects.get(request_id="r4")
    wrong = "other" if log.predicted == "great" else "great"
    add_truth(team.project, "r4", log.predicted, source="feedback")
    metrics_update(project=team.project)
    assert day_total(team.project, log.model_version).correct == 1

    add_truth(team.project, "r4", wrong, source="outcome", minutes=5)
    # A later end-user click does not override the outcome.
    add_truth(team.project, "r4", log.predicted, source="feedback", minutes=10)
    metrics_update(project=team.project)
    total = day_total(team.project, log.model_version)
    assert (total.labelled, total.correct) == (1, 0)
    assert total.true == {wrong: 1}
    assert total.true_correct == {}
    assert total.gain_sum == GAINS[wrong][log.predicted]
    assert_same(team.project, GAINS)


def test_ground_truth_before_its_log_is_counted_when_the_log_arrives(team, versions, gains):
    add_truth(team.project, "r1", "great", source="expert")
    run = metrics_update(project=team.project)
    assert (run.truth, run.truth_changed) == (1, 0)
    make_logs(team.project, versions, 0, 10)
    metrics_update(project=team.project)
    assert day_total(team.project, versions[1]).labelled == 1
    assert_same(team.project, GAINS)


def test_segment_values_past_the_cap_share_one_window(team, versions, monkeypatch):
    monkeypatch.setattr(metrics, "SEGMENT_VALUES_CAP", 2)
    make_logs(team.project, versions, 0, 60, countries=("DE", "DE", "DE", "FR", "FR", "US"))
    metrics_update(project=team.project)
    segments = set(MetricWindow.objects.filter(granularity="day").values_list("segment", flat=True))
    assert segments == {"", "country=DE", "country=FR", "country=(other)"}
    # A later run keeps the admitted values, and a new value goes to "(other)" too.
    make_logs(team.project, versions, 60, 20, countries=("NL",))
    metrics_update(project=team.project)
    segments = set(MetricWindow.objects.filter(granularity="day").values_list("segment", flat=True))
    assert segments == {"", "country=DE", "country=FR", "country=(other)"}
    total = sum(
        Aggregate.from_dict(w.aggregate).n
        for w in MetricWindow.objects.filter(granularity="day").exclude(segment="")
    )
    assert total == PredictionLog.objects.exclude(segment=None).count()


def test_the_summary_reads_accuracy_coverage_and_value(team, versions, gains):
    make_logs(team.project, versions, 0, 40)
    logs = list(PredictionLog.objects.filter(model_version=versions[0]))
    for log in logs[:10]:
        add_truth(team.project, log.request_id, "great")
    metrics_update(project=team.project)
    summary = summarise(day_total(team.project, versions[0]))
    right = sum(log.predicted == "great" for log in logs[:10])
    assert summary.coverage == pytest.approx(10 / len(logs))
    assert summary.accuracy == pytest.approx(right / 10)
    assert summary.value_per_1000 == pytest.approx(
        1000 * sum(GAINS["great"][log.predicted] for log in logs[:10]) / 10
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_do_not_count_twice(team, versions):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers by itself; the row lock is PostgreSQL's")
    make_logs(team.project, versions, 0, 400)
    errors = []

    def run():
        try:
            metrics_update(project=team.project, chunk_size=50)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(day_total(team.project, v).n for v in versions) == 400
    assert_same(team.project)


def test_the_beat_task_updates_every_project_with_logs(team, versions):
    from monitoring.tasks import metrics_update_task

    make_logs(team.project, versions, 0, 12)
    result = metrics_update_task.apply().get()
    assert result == {
        team.project.pk: {"logs": 12, "truth": 0, "seconds": pytest.approx(0, abs=60)}
    }
    assert MonitoringCursor.objects.get(project=team.project).logs_through == max(
        PredictionLog.objects.values_list("id", flat=True)
    )


def test_rows_stored_in_the_last_minutes_wait_for_the_next_run(team, versions):
    from django.utils import timezone

    make_logs(team.project, versions, 0, 5)
    make_logs(team.project, versions, 5, 3, seed=2)
    now = timezone.now()
    # The last three were stored just now: an ingestion request that started
    # earlier may still be writing rows with lower ids, so they wait.
    PredictionLog.objects.filter(request_id__in=["r5", "r6", "r7"]).update(received_at=now)
    PredictionLog.objects.filter(request_id="r1").update(received_at=now)
    add_truth(team.project, "r0", "great")
    late = add_truth(team.project, "r2", "great")
    GroundTruth.objects.filter(pk=late.pk).update(created_at=now)
    run = metrics_update(project=team.project)
    assert (run.logs, run.truth) == (1, 1)  # r0 only: r1 is unsettled, and so on after it
    cursor = MonitoringCursor.objects.get(project=team.project)
    assert cursor.logs_through == PredictionLog.objects.get(request_id="r0").pk
    run = metrics_update(project=team.project, settle_seconds=0)
    assert (run.logs, run.truth) == (7, 1)
    assert_same(team.project)


def test_metrics_are_updated_by_beat_every_few_minutes():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["metrics-update"]
    assert entry["task"] == "monitoring.metrics_update"
    assert 60 <= entry["schedule"] <= 600


def test_each_project_counts_only_its_own_logs(team, versions):
    from iterations.models import DatasetSnapshot, EnsembleConfig, ModelVersion

    other = team.other_project
    snapshot = DatasetSnapshot.objects.create(project=other, content_hash="b" * 64, row_count=0)
    ensemble = EnsembleConfig.objects.create(project=other, number=1, submodels=[])
    theirs = [
        ModelVersion.objects.create(project=other, number=n, snapshot=snapshot, ensemble=ensemble)
        for n in (1, 2)
    ]
    for start in range(0, 60, 20):  # interleaved ids
        make_logs(team.project, versions, start, 10, seed=start)
        make_logs(other, theirs, start + 10, 10, seed=start + 1)
    add_truth(team.project, "r15", "great")  # a request id of the other project only
    add_truth(other, "r15", "great")
    ours = metrics_update(project=team.project, chunk_size=7)
    assert (ours.logs, ours.truth_changed) == (30, 0)
    assert metrics_update(project=other, chunk_size=7).logs == 30
    assert_same(team.project)
    assert_same(other)
