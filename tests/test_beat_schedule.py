from django.conf import settings

from leanml_site.celery import app


def test_every_scheduled_task_exists():
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled
    assert scheduled <= set(app.tasks)


def test_abandoned_leases_are_expired_every_minute():
    entry = settings.CELERY_BEAT_SCHEDULE["expire-abandoned-leases"]
    assert entry["task"] == "labelling.queue_expire_leases"
    assert entry["schedule"] <= 60


def test_automatic_retraining_is_checked_every_few_minutes():
    entry = settings.CELERY_BEAT_SCHEDULE["auto-retrain-check"]
    assert entry["task"] == "iterations.auto_retrain_check"
    assert 60 <= entry["schedule"] <= 600


def test_drift_is_checked_daily():
    entry = settings.CELERY_BEAT_SCHEDULE["drift-check"]
    assert entry["task"] == "monitoring.drift_check"
    assert entry["schedule"] == 24 * 3600
