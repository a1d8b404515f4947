from datetime import timedelta
from unittest import mock

import pytest

from leanml_site.models import AuditEvent
from ml.drift import number
from monitoring.models import Alert, MonitoringSettings
from monitoring.services.alerts import AlertError, alert_acknowledge
from monitoring.services.drift import drift_check

from .drift_data import WINDOW_END, WINDOW_START, add_logs, drift_project  # noqa: F401

URL = "/projects/{}/monitoring/alerts/"


@pytest.fixture
def alerted(drift_project, team, django_capture_on_commit_callbacks):  # noqa: F811
    """The project after a shifted day: open alerts, users with addresses."""
    project, version = drift_project
    for role, user in team.users.items():
        user.email = f"{role}@example.com"
        user.save(update_fields=["email"])
    MonitoringSettings.objects.create(project=project, email_alerts=True)
    add_logs(project, version, shifted=True)
    with django_capture_on_commit_callbacks(execute=True):
        drift_check(project=project, window_start=WINDOW_START, window_end=WINDOW_END)
    return project, version


def test_it_emails_new_alerts_once_to_owners_and_data_scientists(
    alerted, mailoutbox, django_capture_on_commit_callbacks
):
    project, version = alerted
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert sorted(mail.to) == ["data_scientist@example.com", "owner@example.com"]
    count = Alert.objects.filter(project=project).count()
    assert mail.subject == f"[LeanML] Reviews: {count} drift alerts"
    assert "amount: population stability index" in mail.body
    # The next shifted day refreshes the open alerts: no second e-mail.
    add_logs(project, version, shifted=True, seed=7, start=WINDOW_END)
    with django_capture_on_commit_callbacks(execute=True):
        drift_check(
            project=project, window_start=WINDOW_END, window_end=WINDOW_END + timedelta(days=1)
        )
    assert len(mailoutbox) == 1
    assert Alert.objects.filter(project=project).count() == count


def test_it_sends_no_email_unless_the_project_asks(
    drift_project,  # noqa: F811
    mailoutbox,
    django_capture_on_commit_callbacks,
):
    project, version = drift_project
    add_logs(project, version, shifted=True)
    with django_capture_on_commit_callbacks(execute=True):
        drift_check(project=project, window_start=WINDOW_START, window_end=WINDOW_END)
    assert Alert.objects.filter(project=project).exists()
    assert mailoutbox == []


def test_it_lists_open_alerts_first_with_their_numbers(alerted, team):
    project, _ = alerted
    alert = Alert.objects.get(project=project, field="amount", measure="psi")
    Alert.objects.filter(field="channel", measure="psi").update(
        acknowledged_at=WINDOW_END, acknowledged_by=team.users["owner"], note="new <b>channel</b>"
    )
    response = team.client("expert").get(URL.format(project.pk))
    assert response.status_code == 200
    page = response.content.decode()
    open_part, acknowledged_part = page.split('data-testid="acknowledged-alerts"')
    assert alert.sentence in open_part
    assert f"<td>{number(alert.value)}</td>" in open_part and "<td>0.25</td>" in open_part
    assert "channel: population stability index" in acknowledged_part
    assert "new &lt;b&gt;channel&lt;/b&gt;" in acknowledged_part  # notes are escaped
    # Experts read; they get no acknowledge form and no "check now".
    assert "/acknowledge/" not in page and "Check the last day now" not in page


def test_a_small_threshold_is_shown_with_its_digits_and_the_check_with_its_span(
    drift_project,  # noqa: F811
    team,
):
    project, version = drift_project
    MonitoringSettings.objects.create(project=project, psi_threshold=0.0001)
    add_logs(project, version, shifted=True)
    drift_check(project=project, window_start=WINDOW_START, window_end=WINDOW_END)
    alert = Alert.objects.get(project=project, field="amount", measure="psi")
    page = team.client("expert").get(URL.format(project.pk)).content.decode()
    assert "<td>0.0001</td>" in page and "<td>0.000</td>" not in page
    assert "is above the alert threshold 0.0001" in alert.sentence
    assert "(stable)" not in page
    # The page says what each check read instead of claiming "the last day".
    assert "over the last day's logs" not in page
    span = (WINDOW_END - WINDOW_START).days
    assert f'data-testid="last-check-span">({span}\xa0day of logs)' in page


@pytest.mark.parametrize("role", ["data_scientist", "product_manager", "owner"])
def test_it_acknowledges_with_a_note_and_an_audit_event(alerted, team, role):
    project, _ = alerted
    alert = Alert.objects.get(project=project, field="amount", measure="psi")
    url = f"{URL.format(project.pk)}{alert.pk}/acknowledge/"
    response = team.client(role).post(url, {"note": "Autumn prices; retrain planned."})
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == team.users[role]
    assert alert.acknowledged_at is not None and alert.note == "Autumn prices; retrain planned."
    event = AuditEvent.objects.get(action="alert.acknowledge")
    assert event.actor == team.users[role] and event.project_id == project.pk
    assert event.target_id == str(alert.pk) and event.after["note"] == alert.note
    page = team.client(role).get(URL.format(project.pk)).content.decode()
    assert page.count(alert.sentence) == 1  # listed once, among the acknowledged


def test_it_refuses_acknowledgement_by_an_expert_an_outsider_and_anonymous(alerted, team, client):
    project, _ = alerted
    alert = Alert.objects.get(project=project, field="amount", measure="psi")
    url = f"{URL.format(project.pk)}{alert.pk}/acknowledge/"
    assert team.client("expert").post(url, {"note": "x"}).status_code == 403
    assert team.client(team.outsider).post(url, {"note": "x"}).status_code == 404
    assert team.client(team.outsider).get(URL.format(project.pk)).status_code == 404
    assert client.post(url, {"note": "x"}).status_code == 302  # to the login page
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert not AuditEvent.objects.filter(action="alert.acknowledge").exists()


def test_it_refuses_an_alert_of_another_project(alerted, team):
    project, _ = alerted
    alert = Alert.objects.get(project=project, field="amount", measure="psi")
    url = f"/projects/{team.other_project.pk}/monitoring/alerts/{alert.pk}/acknowledge/"
    assert team.client(team.outsider).post(url, {"note": "x"}).status_code == 404
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_it_refuses_a_second_acknowledgement_and_a_long_note(alerted, team):
    project, _ = alerted
    alert = Alert.objects.get(project=project, field="amount", measure="psi")
    alert.project = project
    with pytest.raises(AlertError) as error:
        alert_acknowledge(alert=alert, by=team.users["owner"], note="x" * 2001)
    assert error.value.field == "note"
    alert_acknowledge(alert=alert, by=team.users["owner"], note="seen")
    with pytest.raises(AlertError, match="already acknowledged"):
        alert_acknowledge(alert=alert, by=team.users["product_manager"], note="me too")
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.note) == (team.users["owner"], "seen")
    assert AuditEvent.objects.filter(action="alert.acknowledge").count() == 1


def test_check_now_queues_the_last_day_for_data_scientists_only(
    drift_project,  # noqa: F811
    team,
    django_capture_on_commit_callbacks,
):
    project, _ = drift_project
    url = f"/projects/{project.pk}/monitoring/drift/check/"
    with (
        mock.patch("monitoring.views.drift_check_task.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert team.client("expert").post(url).status_code == 403
        assert team.client("product_manager").post(url).status_code == 403
        assert team.client("data_scientist").post(url).status_code == 302
    delay.assert_called_once()
    kwargs = delay.call_args.kwargs
    assert kwargs["project_id"] == project.pk
    assert kwargs["window_start"] < kwargs["window_end"]


def test_the_task_checks_every_project_with_logs_in_the_window(drift_project):  # noqa: F811
    from monitoring.tasks import drift_check_task

    project, version = drift_project
    add_logs(project, version, shifted=True)
    result = drift_check_task(
        window_start=WINDOW_START.isoformat(), window_end=WINDOW_END.isoformat()
    )
    assert len(result["checks"]) == 1
    # A window without logs checks nothing.
    empty = drift_check_task(
        window_start=WINDOW_END.isoformat(),
        window_end=(WINDOW_END + timedelta(days=1)).isoformat(),
    )
    assert empty == {"checks": []}


API = "/api/v1/projects/{}/"


def test_the_api_lists_alerts_open_first_and_acknowledges(alerted, team):
    project, _ = alerted
    amount = Alert.objects.get(project=project, field="amount", measure="psi")
    Alert.objects.filter(field="channel", measure="psi").update(acknowledged_at=WINDOW_END)
    listed = team.client("expert").get(API.format(project.pk) + "alerts/").json()
    assert listed[-1]["field"] == "channel" and listed[-1]["acknowledged_at"] is not None
    assert all(a["acknowledged_at"] is None for a in listed[:-1])
    open_only = team.client("expert").get(API.format(project.pk) + "alerts/?open=true").json()
    assert len(open_only) == len(listed) - 1
    url = API.format(project.pk) + f"alerts/{amount.pk}/acknowledge/"
    assert team.client("expert").post(url, {"note": "x"}).status_code == 403
    assert team.client(team.outsider).post(url, {"note": "x"}).status_code == 404
    response = team.client("product_manager").post(
        url, {"note": "seen"}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["acknowledged_by"] == "product_manager"
    again = team.client("owner").post(url, {}, content_type="application/json")
    assert again.status_code == 400
    # The API's one error shape: the service's sentence, its field, DRF's detail.
    assert again.json() == {
        "message": again.json()["errors"]["alert"][0],
        "field": "alert",
        "errors": {"alert": [again.json()["message"]]},
    }
    assert "already acknowledged" in again.json()["message"]
    assert AuditEvent.objects.filter(action="alert.acknowledge").count() == 1
    missing = team.client("owner").post(API.format(project.pk) + "alerts/999999/acknowledge/")
    assert missing.status_code == 404
    assert (missing.json()["message"], missing.json()["field"]) == ("No such alert.", None)


def test_the_api_lists_drift_checks(alerted, team):
    project, _ = alerted
    response = team.client("expert").get(API.format(project.pk) + "drift-checks/")
    [check] = response.json()
    assert check["model_version"] == 1 and check["n_current"] == 400
    assert {r["kind"] for r in check["results"]} == {"numeric", "categorical", "text", "prediction"}
    assert (
        team.client("expert").get(API.format(project.pk) + "drift-checks/?version=2").json() == []
    )
    bad = team.client("expert").get(API.format(project.pk) + "drift-checks/?version=two")
    assert bad.status_code == 400 and bad.json()["field"] == "version"
    assert (
        team.client(team.outsider).get(API.format(project.pk) + "drift-checks/").status_code == 404
    )


def test_a_mail_server_that_is_down_leaves_the_check_and_its_alerts(
    drift_project,  # noqa: F811
    team,
    django_capture_on_commit_callbacks,
    caplog,
):
    project, version = drift_project
    team.users["owner"].email = "owner@example.com"
    team.users["owner"].save(update_fields=["email"])
    MonitoringSettings.objects.create(project=project, email_alerts=True)
    add_logs(project, version, shifted=True)
    with (
        mock.patch("monitoring.services.alerts.send_mail", side_effect=ConnectionRefusedError),
        django_capture_on_commit_callbacks(execute=True),
    ):
        [check] = drift_check(project=project, window_start=WINDOW_START, window_end=WINDOW_END)
    assert Alert.objects.filter(drift_check=check).exists()
    assert "could not e-mail drift alerts" in caplog.text
