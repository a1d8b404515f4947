"""Iteration API routes, mounted beside the labelling API under /api/v1/."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
router.include_format_suffixes = False

urlpatterns = [
    *router.urls,
]
