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
]
