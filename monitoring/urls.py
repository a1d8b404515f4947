"""Monitoring pages, under /projects/<project_pk>/ like the other apps' pages."""

from django.urls import path

from . import views

app_name = "monitoring"

urlpatterns = [
    path("projects/<int:project_pk>/api-keys/", views.api_key_list, name="api_key_list"),
    path(
        "projects/<int:project_pk>/api-keys/<int:pk>/revoke/",
        views.api_key_revoke_page,
        name="api_key_revoke",
    ),
    path(
        "projects/<int:project_pk>/predictions/upload/",
        views.prediction_upload,
        name="prediction_upload",
    ),
    path("projects/<int:project_pk>/surfacing/", views.surface_now, name="surface_now"),
    path(
        "projects/<int:project_pk>/surfacing/<int:pk>/",
        views.surfacing_run_detail,
        name="surfacing_run",
    ),
    path("projects/<int:project_pk>/queue/", views.queue_overview, name="queue"),
    path(
        "projects/<int:project_pk>/queue/label-errors/",
        views.label_error_list,
        name="label_errors",
    ),
    path(
        "projects/<int:project_pk>/queue/strategy/",
        views.queue_strategy_priority,
        name="queue_strategy_priority",
    ),
    path(
        "projects/<int:project_pk>/queue/items/<int:pk>/priority/",
        views.queue_item_priority,
        name="queue_item_priority",
    ),
    path("projects/<int:project_pk>/monitoring/", views.monitoring_page, name="monitoring"),
    path("projects/<int:project_pk>/monitoring/alerts/", views.alert_list, name="alert_list"),
    path(
        "projects/<int:project_pk>/monitoring/alerts/<int:pk>/acknowledge/",
        views.alert_acknowledge_page,
        name="alert_acknowledge",
    ),
    path(
        "projects/<int:project_pk>/monitoring/drift/check/",
        views.drift_check_now,
        name="drift_check_now",
    ),
    path(
        "projects/<int:project_pk>/monitoring/settings/",
        views.monitoring_settings_page,
        name="settings",
    ),
]
