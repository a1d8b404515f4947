"""Iteration pages, under /projects/<project_pk>/ like the labelling pages."""

from django.urls import path  # noqa: F401

app_name = "iterations"

urlpatterns = []
