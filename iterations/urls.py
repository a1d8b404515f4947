"""Iteration pages, under /projects/<project_pk>/ like the labelling pages.

Two blocks: the iteration pages (list, detail, retrain, sign-off) and the
model settings pages (value metric, gates, keyword rules).
"""

from django.urls import path  # noqa: F401

app_name = "iterations"

# --- iterations: list, detail, retrain, sign-off ---------------------------------------
iteration_patterns = []

# --- model settings: value metric, gates, keyword rules --------------------------------
settings_patterns = []

urlpatterns = [*iteration_patterns, *settings_patterns]
