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
