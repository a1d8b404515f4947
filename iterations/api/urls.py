"""Iteration API routes, mounted beside the labelling API under /api/v1/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import iterations, settings

PROJECT = r"projects/(?P<project_pk>\d+)"

router = DefaultRouter()
router.include_format_suffixes = False
router.register(f"{PROJECT}/iterations", iterations.IterationViewSet, basename="iteration")
router.register(
    f"{PROJECT}/model-versions", iterations.ModelVersionViewSet, basename="model-version"
)
router.register(f"{PROJECT}/training-jobs", iterations.TrainingJobViewSet, basename="training-job")
router.register(f"{PROJECT}/reports", iterations.ReportViewSet, basename="report")
router.register(f"{PROJECT}/decisions", iterations.DecisionViewSet, basename="decision")
router.register(f"{PROJECT}/rule-sets", settings.RuleSetViewSet, basename="rule-set")
router.register(
    f"{PROJECT}/ensemble-configs", settings.EnsembleConfigViewSet, basename="ensemble-config"
)

urlpatterns = [
    path(
        "projects/<int:project_pk>/model-settings/",
        settings.ModelSettingsView.as_view(),
        name="model-settings",
    ),
    *router.urls,
]
