"""Pieces the iteration API views share."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from leanml_site.api import IdCursorPagination

PROJECT_PARAM = OpenApiParameter("project_pk", int, OpenApiParameter.PATH, description="Project id")


class NewestFirstPagination(IdCursorPagination):
    ordering = "-id"


class ErrorSerializer(serializers.Serializer):
    """Every API error (see leanml_site.api.exception_handler)."""

    message = serializers.CharField(help_text="What is wrong, in a sentence for people.")
    field = serializers.CharField(allow_null=True, help_text="The input at fault, if one is.")
    errors = serializers.JSONField(help_text="DRF's detail, as given.")


def refusal(error, field=None) -> ValidationError:
    """A service's refusal (a ValueError with an optional ``field``) as a 400
    ``{"message", "field"}``."""
    field = field or getattr(error, "field", None)
    return ValidationError({field: [str(error)]} if field else [str(error)])
