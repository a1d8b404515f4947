"""Shared API pieces: pagination, the project path parameter and the JSON
error format."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.views import exception_handler as drf_exception_handler

PROJECT_PARAM = OpenApiParameter("project_pk", int, OpenApiParameter.PATH, description="Project id")


class IdCursorPagination(CursorPagination):
    ordering = "id"
    page_size_query_param = "page_size"
    max_page_size = 500


def _first_error(detail, path=()):
    """Walk DRF's nested error detail to the first message and the field it is on."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            found = _first_error(value, (*path, str(key)))
            if found:
                return found
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            inner_path = path if not isinstance(value, dict | list) else (*path, str(index))
            found = _first_error(value, inner_path)
            if found:
                return found
    elif detail is not None:
        field = ".".join(p for p in path if p != "non_field_errors") or None
        return str(detail), field
    return None


def _as_lists(detail):
    """Every field's errors as a list of messages, as a serializer gives them:
    ``ValidationError({"field": "message"})`` alone would give a bare string."""
    if isinstance(detail, dict):
        return {
            key: [value] if isinstance(value, str) else _as_lists(value)
            for key, value in detail.items()
        }
    if isinstance(detail, list):
        return [_as_lists(value) for value in detail]
    return detail


def exception_handler(exc, context):
    """Every API error is ``{"message": ..., "field": ..., "errors": ...}``."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, ValidationError):
        if isinstance(detail, str):
            detail = [detail]
        if isinstance(detail, list):
            detail = {"non_field_errors": detail}
        detail = _as_lists(detail)
        message, field = _first_error(detail) or ("Invalid input.", None)
    else:
        message = detail.get("detail", str(exc)) if isinstance(detail, dict) else str(detail)
        field = None
    response.data = {"message": str(message), "field": field, "errors": detail}
    return response


class ErrorSerializer(serializers.Serializer):
    """Every API error (see ``exception_handler``)."""

    message = serializers.CharField(help_text="What is wrong, in a sentence for people.")
    field = serializers.CharField(allow_null=True, help_text="The input at fault, if one is.")
    errors = serializers.JSONField(
        help_text="Every message by field: a list of messages per field (nested fields "
        "nest), those about no field in particular under non_field_errors."
    )


def refusal(error, field=None) -> ValidationError:
    """A service's refusal (``leanml_site.errors.Refusal``, or any ValueError
    with an optional ``field``) as a 400 ``{"message", "field", "errors"}``;
    one about no field in particular sits under ``non_field_errors``, as a
    serializer's own errors do."""
    field = field or getattr(error, "field", None)
    return ValidationError({field or "non_field_errors": [str(error)]})
