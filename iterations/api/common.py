"""Pieces the iteration API views share."""

from leanml_site.api import PROJECT_PARAM, ErrorSerializer, IdCursorPagination, refusal

__all__ = ["PROJECT_PARAM", "ErrorSerializer", "NewestFirstPagination", "refusal"]


class NewestFirstPagination(IdCursorPagination):
    ordering = "-id"
