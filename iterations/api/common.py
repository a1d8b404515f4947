"""Pieces the iteration API views share."""

from leanml_site.api import IdCursorPagination


class NewestFirstPagination(IdCursorPagination):
    ordering = "-id"
