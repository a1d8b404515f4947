"""Alerts: raised by drift checks, acknowledged by a person, optionally e-mailed.

One open alert per (project, kind, field, measure): while one is
unacknowledged, a later check crossing the same threshold refreshes it (its
value, sentence, latest check and window end; ``window_start`` keeps the
start of the first window, so the page reads "open since") instead of
adding a second row or a second e-mail. Once acknowledged, the next crossing
is a new alert: a person said they saw the old one, not this one.
"""

from __future__ import annotations

import logging
import smtplib

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from leanml_site.audit import audit_record
from leanml_site.errors import Refusal
from leanml_site.roles import Role

from ..models import Alert, MonitoringSettings

NOTE_MAX = 2000
logger = logging.getLogger(__name__)


class AlertError(Refusal):
    """An alert cannot be acknowledged as asked."""


def alerts_raise(*, project, check, alerts, notify=True) -> tuple[list[Alert], list[Alert]]:
    """Store ``ml.drift`` alerts of one drift check; returns (new, refreshed).
    New alerts are e-mailed after commit when the project asks for it."""
    new, refreshed = [], []
    for found in alerts:
        open_alert = (
            Alert.objects.select_for_update()
            .filter(
                project=project,
                kind=Alert.Kind.DRIFT,
                field=found.field,
                measure=found.measure,
                acknowledged_at__isnull=True,
            )
            .order_by("id")
            .first()
        )
        if open_alert is not None:
            open_alert.value = found.value
            open_alert.threshold = found.threshold
            open_alert.sentence = found.sentence
            open_alert.drift_check = check
            open_alert.window_end = max(open_alert.window_end, check.window_end)
            open_alert.save(
                update_fields=["value", "threshold", "sentence", "drift_check", "window_end"]
            )
            refreshed.append(open_alert)
            continue
        new.append(
            Alert.objects.create(
                project=project,
                kind=Alert.Kind.DRIFT,
                field=found.field,
                measure=found.measure,
                value=found.value,
                threshold=found.threshold,
                sentence=found.sentence,
                window_start=check.window_start,
                window_end=check.window_end,
                drift_check=check,
            )
        )
    wants_mail = (
        MonitoringSettings.objects.filter(project=project, email_alerts=True).exists()
        if new and notify
        else False
    )
    if wants_mail:
        ids = [a.pk for a in new]
        transaction.on_commit(lambda: _email_or_log(project=project, alert_ids=ids))
    return new, refreshed


def _email_or_log(*, project, alert_ids):
    # The check and its alerts are stored by now and listed on the page; a
    # mail server that is down must not turn the whole check into a failure.
    try:
        alerts_email(project=project, alert_ids=alert_ids)
    except (OSError, smtplib.SMTPException):
        logger.exception("could not e-mail drift alerts %s of project %s", alert_ids, project.pk)


def alert_recipients(project) -> list[str]:
    """The e-mail addresses of the project's owners and data scientists."""
    return sorted(
        {
            address
            for address in project.memberships.filter(
                role__in=[Role.OWNER, Role.DATA_SCIENTIST]
            ).values_list("user__email", flat=True)
            if address
        }
    )


def alerts_email(*, project, alert_ids) -> int:
    """One e-mail listing the new alerts, to the owners and data scientists."""
    recipients = alert_recipients(project)
    alerts = list(Alert.objects.filter(pk__in=alert_ids).order_by("id"))
    if not recipients or not alerts:
        return 0
    window = alerts[0]
    lines = [
        f"LeanML found drift in project “{project.name}” "
        f"({window.window_start:%Y-%m-%d %H:%M} to {window.window_end:%Y-%m-%d %H:%M} UTC):",
        "",
        *(f"- {a.sentence}" for a in alerts),
        "",
        "Acknowledge them on the project's alerts page.",
    ]
    count = len(alerts)
    subject = f"[LeanML] {project.name}: {count} drift alert{'s' if count != 1 else ''}"
    return send_mail(
        subject,
        "\n".join(lines),
        settings.DEFAULT_FROM_EMAIL,
        recipients,
        fail_silently=False,
    )


def alert_acknowledge(*, alert, by, note="") -> Alert:
    """A person says they have seen the alert (and what they did about it)."""
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise AlertError(f"The note has {len(note)} characters; at most {NOTE_MAX}.", "note")
    with transaction.atomic():
        # Only an open alert changes: two people acknowledging at once leave one record.
        updated = Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_by=by, acknowledged_at=timezone.now(), note=note
        )
        if not updated:
            raise AlertError("This alert is already acknowledged.", "alert")
        alert.refresh_from_db()
        audit_record(
            actor=by,
            action="alert.acknowledge",
            project=alert.project,
            target=alert,
            before={"acknowledged": False},
            after={"acknowledged": True, "note": note},
        )
    return alert
