from datetime import timedelta

import pytest

from monitoring.models import Alert, DriftCheck
from monitoring.services import drift as drift_service
from monitoring.services.drift import (
    LABEL_FIELD,
    PREDICTION_FIELD,
    DriftError,
    drift_check,
)

from .drift_data import WINDOW_END, WINDOW_START, add_logs, drift_project  # noqa: F401


def _check(project):
    return drift_check(project=project, window_start=WINDOW_START, window_end=WINDOW_END)


def test_it_stays_quiet_on_logs_like_the_training_rows(drift_project):  # noqa: F811
    project, version = drift_project
    add_logs(project, version, shifted=False)
    [check] = _check(project)
    assert check.model_version == version
    assert (check.n_current, check.n_reference) == (400, 400)
    by_field = {r["field"]: r for r in check.results}
    assert set(by_field) == {"review", "amount", "channel", PREDICTION_FIELD}
    assert by_field["amount"]["kind"] == "numeric" and by_field["amount"]["psi"] < 0.1
    assert by_field["channel"]["kind"] == "categorical" and by_field["channel"]["psi"] < 0.1
    assert by_field["review"]["kind"] == "text" and by_field["review"]["oov_share"] == 0
    assert Alert.objects.filter(project=project).count() == 0


def test_it_raises_an_alert_for_each_shifted_field(drift_project):  # noqa: F811
    project, version = drift_project
    add_logs(project, version, shifted=True)
    [check] = _check(project)
    alerts = {(a.field, a.measure): a for a in Alert.objects.filter(project=project)}
    assert ("amount", "psi") in alerts
    assert ("channel", "psi") in alerts
    assert ("review", "oov_share") in alerts
    assert ("review", "centroid_distance") in alerts
    assert (PREDICTION_FIELD, "share_change") in alerts
    share = alerts[(PREDICTION_FIELD, "share_change")]
    # 40% "other" in training, about 80% predicted in the window (the rarer class is named).
    assert "the share of 'other' moved from 40.0% to 7" in share.sentence
    assert all(a.drift_check == check and a.acknowledged_at is None for a in alerts.values())
    assert alerts[("amount", "psi")].value > alerts[("amount", "psi")].threshold == 0.25


def test_it_checks_the_true_labels_only_where_enough_ground_truth_exists(drift_project):  # noqa: F811
    project, version = drift_project
    add_logs(project, version, shifted=True, truth=drift_service.MIN_TRUTH - 1)
    [check] = _check(project)
    assert LABEL_FIELD not in {r["field"] for r in check.results}
    add_logs(project, version, shifted=True, truth=200, seed=3)
    [check] = _check(project)
    label = next(r for r in check.results if r["field"] == LABEL_FIELD)
    assert label["kind"] == "label" and label["current_n"] == 200 + drift_service.MIN_TRUTH - 1
    assert Alert.objects.filter(project=project, field=LABEL_FIELD, measure="share_change").exists()


def test_it_does_not_open_a_second_alert_while_one_is_open(drift_project):  # noqa: F811
    project, version = drift_project
    add_logs(project, version, shifted=True)
    _check(project)
    first = set(Alert.objects.values_list("pk", flat=True))
    # The next day shifted too: the open alerts are refreshed, not repeated.
    add_logs(project, version, shifted=True, seed=5, start=WINDOW_END)
    [later] = drift_check(
        project=project, window_start=WINDOW_END, window_end=WINDOW_END + timedelta(days=1)
    )
    assert set(Alert.objects.values_list("pk", flat=True)) == first
    amount = Alert.objects.get(field="amount", measure="psi")
    assert amount.drift_check == later
    assert (amount.window_start, amount.window_end) == (WINDOW_START, later.window_end)
    # Once acknowledged, the next crossing is a new alert.
    Alert.objects.filter(pk=amount.pk).update(acknowledged_at=WINDOW_END)
    _check(project)
    assert Alert.objects.filter(field="amount", measure="psi").count() == 2


def test_it_samples_large_windows_reproducibly(drift_project, monkeypatch):  # noqa: F811
    project, version = drift_project
    add_logs(project, version, shifted=False)
    monkeypatch.setattr(drift_service, "MAX_CURRENT", 100)
    [a] = _check(project)
    [b] = _check(project)
    assert a.n_current == b.n_current == 100
    assert a.results == b.results


def test_it_records_a_field_without_values_instead_of_failing(drift_project):  # noqa: F811
    project, version = drift_project
    logs = add_logs(project, version, shifted=False)
    for log in logs:
        log.data = {k: v for k, v in log.data.items() if k != "review"}
    type(logs[0]).objects.bulk_update(logs, ["data"])
    [check] = _check(project)
    review = next(r for r in check.results if r["field"] == "review")
    assert "non-empty texts on both sides" in review["error"]
    assert not Alert.objects.filter(field="review").exists()


def test_it_checks_nothing_without_logs_and_refuses_a_backwards_window(drift_project):  # noqa: F811
    project, _ = drift_project
    assert _check(project) == []
    assert DriftCheck.objects.count() == 0
    with pytest.raises(DriftError) as error:
        drift_check(project=project, window_start=WINDOW_END, window_end=WINDOW_START)
    assert error.value.field == "window_end"


def test_drift_series_gives_each_measure_over_time_with_its_threshold(drift_project):  # noqa: F811
    from monitoring.selectors import drift_series

    project, version = drift_project
    add_logs(project, version, shifted=False)
    _check(project)
    add_logs(project, version, shifted=True, seed=9, start=WINDOW_END)
    drift_check(project=project, window_start=WINDOW_END, window_end=WINDOW_END + timedelta(days=1))
    series = {(s["field"], s["measure"]): s for s in drift_series(project)}
    amount = series[("amount", "psi")]
    assert amount["threshold"] == 0.25 and amount["kind"] == "numeric"
    assert [p["window_start"] for p in amount["points"]] == [WINDOW_START, WINDOW_END]
    quiet, moved = (p["value"] for p in amount["points"])
    assert quiet < 0.1 < 0.25 < moved
    assert {("review", "oov_rise"), ("review", "centroid_distance")} <= set(series)
    share = series[(PREDICTION_FIELD, "share_change")]
    assert share["threshold"] == 0.05 and share["points"][1]["value"] > 0.3
    # A new channel ("phone", ~70% of the shifted day): shown, never an alert by itself.
    unseen = series[("channel", "unseen_share")]
    assert unseen["threshold"] is None
    assert [round(p["value"], 1) for p in unseen["points"]] == [0.0, 0.7]
    assert (PREDICTION_FIELD, "unseen_share") not in series
    assert all(p["version"] == 1 for s in series.values() for p in s["points"])
    assert drift_series(project, version=version) == list(series.values())
    assert drift_series(project.__class__.objects.exclude(pk=project.pk).first()) == []


def test_it_samples_a_large_reference_reproducibly(drift_project, monkeypatch):  # noqa: F811
    project, version = drift_project
    add_logs(project, version, shifted=False)
    monkeypatch.setattr(drift_service, "MAX_REFERENCE", 150)
    monkeypatch.setattr(drift_service, "_REFERENCE_CACHE", drift_service.OrderedDict())
    [a] = _check(project)
    monkeypatch.setattr(drift_service, "_REFERENCE_CACHE", drift_service.OrderedDict())
    [b] = _check(project)
    assert a.n_reference == b.n_reference == 150
    assert a.results == b.results


def test_drift_series_counts_a_window_checked_twice_once(drift_project):  # noqa: F811
    from monitoring.selectors import drift_series

    project, version = drift_project
    add_logs(project, version, shifted=False)
    _check(project)
    _check(project)
    amount = next(s for s in drift_series(project) if s["field"] == "amount")
    assert len(amount["points"]) == 1
