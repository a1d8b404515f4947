"""Iteration pages, under /projects/<project_pk>/ like the labelling pages.

Two blocks: the iteration pages (list, detail, retrain, sign-off) and the
model settings pages (value metric, gates, keyword rules).
"""

from django.urls import path  # noqa: F401

from .views import iterations as iteration_views
from .views import settings as settings_views

app_name = "iterations"

# --- iterations: list, detail, retrain, sign-off ---------------------------------------
_I = "projects/<int:project_pk>/iterations/"
iteration_patterns = [
    path(_I, iteration_views.iteration_list_view, name="iteration_list"),
    path(f"{_I}new/", iteration_views.iteration_create_view, name="iteration_create"),
    path(f"{_I}<int:pk>/", iteration_views.iteration_detail, name="iteration_detail"),
    path(
        f"{_I}<int:pk>/retrain/", iteration_views.iteration_retrain_view, name="iteration_retrain"
    ),
    path(f"{_I}<int:pk>/decide/", iteration_views.iteration_decide_view, name="iteration_decide"),
    path(
        f"{_I}<int:pk>/abandon/", iteration_views.iteration_abandon_view, name="iteration_abandon"
    ),
    path(f"{_I}<int:pk>/rerun/", iteration_views.iteration_rerun_view, name="iteration_rerun"),
    path(
        f"{_I}<int:pk>/jobs/<int:job_pk>/progress/",
        iteration_views.job_progress,
        name="job_progress",
    ),
    path(f"{_I}<int:pk>/jobs/<int:job_pk>/cancel/", iteration_views.job_cancel, name="job_cancel"),
]

# --- model settings: value metric, gates, keyword rules --------------------------------
settings_patterns = [
    path(
        "projects/<int:project_pk>/model-settings/",
        settings_views.model_settings,
        name="model_settings",
    ),
    path("projects/<int:project_pk>/rules/", settings_views.rules, name="rules"),
    path(
        "projects/<int:project_pk>/rules/preview/",
        settings_views.rules_preview,
        name="rules_preview",
    ),
]

urlpatterns = [*iteration_patterns, *settings_patterns]
