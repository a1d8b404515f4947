"""Monitoring API routes, mounted under /api/v1/."""

from django.urls import path

from . import api

_P = "projects/<int:project_pk>/"

urlpatterns = [
    path(f"{_P}predictions/", api.predictions, name="prediction-logs"),
    path(f"{_P}outcomes/", api.outcomes, name="outcomes"),
    path(f"{_P}feedback/", api.feedback, name="feedback"),
    path(f"{_P}api-keys/", api.api_keys, name="api-key-list"),
    path(f"{_P}api-keys/<int:pk>/revoke/", api.api_key_revoke_view, name="api-key-revoke"),
    path(f"{_P}alerts/", api.alert_list_api, name="alert-list"),
    path(f"{_P}alerts/<int:pk>/acknowledge/", api.alert_acknowledge_api, name="alert-acknowledge"),
    path(f"{_P}drift-checks/", api.drift_check_list_api, name="drift-check-list"),
    path(f"{_P}label-errors/", api.label_error_list_api, name="label-error-list"),
    path(f"{_P}monitoring-settings/", api.monitoring_settings_api, name="monitoring-settings"),
    path(f"{_P}surfacing-runs/", api.surfacing_runs_api, name="surfacing-run-list"),
]
