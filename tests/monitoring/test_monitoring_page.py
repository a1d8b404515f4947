"""The monitoring page: charts over time from the metric windows."""

from datetime import UTC, datetime, timedelta

import pytest

from iterations.models import ModelSettings
from leanml_site.roles import Role
from monitoring import charts
from monitoring.models import GroundTruth, PredictionLog
from monitoring.services.metrics import metrics_update

URL = "/projects/{}/monitoring/"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script>'


def log(project, version, i, *, predicted="great", segment=None, hours=0):
    return PredictionLog.objects.create(
        project=project,
        request_id=f"r{i}",
        timestamp=T0 + timedelta(hours=hours),
        model_version=version,
        data={"review": "text"},
        predicted=predicted,
        probabilities={predicted: 0.9},
        confidence=0.9,
        latency_ms=20.0 + i,
        segment=segment,
        received_at=T0,
    )


@pytest.fixture
def logged(team, versions):
    ModelSettings.objects.create(
        project=team.project,
        gain_matrix={"great": {"great": 3, "other": -1}, "other": {"great": -8, "other": 0}},
        useful_baseline=500,
    )
    for i in range(30):
        log(
            team.project,
            versions[i % 2],
            i,
            predicted="great" if i % 3 else "other",
            segment={"country": "DE" if i % 2 else "FR"},
            hours=i,
        )
    for i in range(0, 30, 2):
        GroundTruth.objects.create(
            project=team.project,
            request_id=f"r{i}",
            label="great",
            source="outcome",
            created_at=T0 + timedelta(days=2),
        )
    metrics_update(project=team.project)
    return team


def test_it_shows_an_empty_state_before_any_prediction(team):
    response = team.client("owner").get(URL.format(team.project.pk))
    assert response.status_code == 200
    assert "No predictions logged yet" in response.content.decode()
    assert "Sending predictions" in response.content.decode()


def test_it_says_metrics_come_with_the_next_run_when_logs_are_not_folded_yet(team, versions):
    log(team.project, versions[0], 1)
    body = team.client("owner").get(URL.format(team.project.pk)).content.decode()
    assert 'data-testid="no-windows"' in body
    assert "next scheduled run" in body


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_member_sees_the_charts(logged, role):
    response = logged.client(role).get(URL.format(logged.project.pk))
    assert response.status_code == 200
    body = response.content.decode()
    for title in (
        "Predictions per day",
        "Accuracy per day with its interval",
        "Share of each predicted class per day",
        "Latency per day",
        "Value per 1,000 predictions per day, against the baseline",
    ):
        assert f"<title>{title}" in body, title
    assert 'data-testid="version-summary"' in body
    assert "Monitoring</a>" in body  # the project nav links here


def test_an_outsider_gets_404_and_a_visitor_the_login_page(logged):
    assert logged.client(logged.outsider).get(URL.format(logged.project.pk)).status_code == 404
    from django.test import Client

    response = Client().get(URL.format(logged.project.pk))
    assert response.status_code == 302 and "/login" in response["Location"]


def test_filters_by_version_segment_and_granularity(logged, versions):
    client = logged.client("owner")
    url = URL.format(logged.project.pk)
    body = client.get(url, {"granularity": "hour"}).content.decode()
    assert "<title>Predictions per hour" in body
    # v2 served the odd requests, all in segment country=DE: 15 bars of 1 prediction.
    body = client.get(url, {"version": "2", "segment": "country=DE", "granularity": "hour"})
    body = body.content.decode()
    assert body.count(": 1 predictions</title></rect>") == 15
    body = client.get(url, {"version": "1", "segment": "country=DE", "granularity": "hour"})
    assert 'data-testid="no-windows"' in body.content.decode()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"version": "9"}, "version “9”: this project has no such model version."),
        ({"version": "abc"}, "version “abc”: this project has no such model version."),
        ({"segment": "country=XX"}, "segment “country=XX”: no predictions were logged with it."),
        ({"granularity": "week"}, "granularity “week”: choose hour or day."),
    ],
)
def test_a_bad_filter_is_named_and_the_rest_still_shows(logged, params, message):
    response = logged.client("owner").get(URL.format(logged.project.pk), params)
    assert response.status_code == 400
    body = response.content.decode()
    assert message in body
    assert "<title>Predictions per day" in body


def test_class_names_and_segment_values_are_escaped(team, versions):
    log(team.project, versions[0], 1, predicted=EVIL, segment={"country": EVIL})
    metrics_update(project=team.project)
    client = team.client("owner")
    for params in ({}, {"segment": f"country={EVIL}"}):
        response = client.get(URL.format(team.project.pk), params)
        assert response.status_code == 200
        body = response.content.decode()
        assert EVIL not in body
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


def test_drift_checks_are_drawn_with_their_threshold(logged, versions):
    from monitoring.models import DriftCheck

    for day, psi in ((0, 0.05), (1, 0.4)):
        DriftCheck.objects.create(
            project=logged.project,
            model_version=versions[0],
            window_start=T0 + timedelta(days=day),
            window_end=T0 + timedelta(days=day + 1),
            n_current=100,
            n_reference=100,
            results=[{"field": EVIL, "kind": "numeric", "psi": psi}],
        )
    client = logged.client("expert")
    body = client.get(URL.format(logged.project.pk)).content.decode()
    assert 'data-testid="drift-charts"' in body
    assert "alert above 0.25" in body
    assert EVIL not in body
    body = client.get(URL.format(logged.project.pk), {"version": "2"}).content.decode()
    assert 'data-testid="no-drift"' in body and "for v2" in body


def _summary_rows(body):
    table = body.split('data-testid="version-summary"')[1].split("</table>")[0]
    return table.split("<tbody>")[1].count("<tr>")


def test_the_table_reads_the_period_version_and_segment_the_charts_read(team, versions):
    # v1: 4 predictions ten days before v1's and v2's 3 recent ones each.
    for i in range(4):
        log(team.project, versions[0], 100 + i, hours=i)
    for i in range(3):
        log(team.project, versions[0], 200 + i, hours=240 + i)
        log(team.project, versions[1], 300 + i, hours=240 + i, segment={"country": "DE"})
    metrics_update(project=team.project)
    client = team.client("owner")
    url = URL.format(team.project.pk)
    hour = client.get(url, {"granularity": "hour"})
    body = hour.content.decode()
    # The last 7 days: 3 + 3 predictions, as in the volume chart.
    table = body.split('data-testid="version-summary"')[1].split("</table>")[0]
    assert [s.n for s in (row["summary"] for row in hour.context["summary"])] == [3, 3]
    assert "Mar 11 – Mar 11" in table  # v1's logged span within the period, not Mar 01
    assert body.count(": 2 predictions</title></rect>") == 3  # both versions, per hour
    assert 'data-testid="period">· last 7 days, Mar 04 10:00 – Mar 11 11:00 UTC' in body
    # Per day over 90 days: all of v1's 7.
    day = client.get(url)
    assert sorted(row["summary"].n for row in day.context["summary"]) == [3, 7]
    assert "last 90 days" in day.content.decode()
    # A chosen version or segment narrows the table as it narrows the charts.
    only_v2 = client.get(url, {"version": "2"})
    assert [row["version"].number for row in only_v2.context["summary"]] == [2]
    de = client.get(url, {"segment": "country=DE", "granularity": "hour"})
    assert [(row["version"].number, row["summary"].n) for row in de.context["summary"]] == [(2, 3)]
    assert _summary_rows(de.content.decode()) == 1


def test_drift_checks_outside_the_period_are_left_out_and_long_ones_span_it(logged, versions):
    from monitoring.models import DriftCheck

    def check(start, days, psi):
        DriftCheck.objects.create(
            project=logged.project,
            model_version=versions[0],
            window_start=start,
            window_end=start + timedelta(days=days),
            n_current=100,
            n_reference=100,
            results=[{"field": "stars", "kind": "numeric", "psi": psi}],
        )

    client = logged.client("owner")
    url = URL.format(logged.project.pk)
    check(T0 - timedelta(days=30), 1, 0.3)  # long before the last 7 days
    body = client.get(url, {"granularity": "hour"}).content.decode()
    assert 'data-testid="no-drift"' in body and "of the last 7 days" in body
    # ...but within the 90 days of the day view.
    assert 'data-testid="drift-charts"' in client.get(url).content.decode()
    # A 15-day check ending in the period is drawn across all of it.
    check(T0 + timedelta(days=1) - timedelta(days=15), 15, 0.1)
    body = client.get(url, {"granularity": "hour"}).content.decode()
    drift_part = body.split('data-testid="drift-charts"')[1]
    assert drift_part.count('stroke-width="3"><title>') == 1
    assert f'x1="{charts.LEFT:.1f}"' in drift_part


def test_without_segments_the_page_says_how_a_product_sends_them(team, versions, logged):
    body = logged.client("owner").get(URL.format(logged.project.pk)).content.decode()
    assert 'data-testid="no-segments"' not in body  # logged with countries
    assert '<option value="country=DE"' in body
    PredictionLog.objects.all().delete()
    from monitoring.models import MetricWindow

    MetricWindow.objects.exclude(segment="").delete()
    body = logged.client("owner").get(URL.format(logged.project.pk)).content.decode()
    assert 'data-testid="no-segments"' in body
    assert "<code>segment</code> object" in body and "segment_country" in body


def test_drift_charts_share_the_time_axis_of_the_charts_above(logged, versions):
    from monitoring.models import DriftCheck

    DriftCheck.objects.create(
        project=logged.project,
        model_version=versions[0],
        window_start=T0.replace(hour=0),
        window_end=T0.replace(hour=0) + timedelta(days=1),
        n_current=100,
        n_reference=100,
        results=[{"field": "stars", "kind": "numeric", "psi": 0.1}],
    )
    # Per day: the logs fill two days, so the one-day check spans the first half,
    # not a sliver of 90 days.
    body = logged.client("owner").get(URL.format(logged.project.pk)).content.decode()
    drift_part = body.split('data-testid="drift-charts"')[1]
    middle = charts.LEFT + charts.PLOT_W / 2
    assert f'x1="{charts.LEFT:.1f}" y1=' in drift_part
    assert f'x2="{middle:.1f}"' in drift_part
