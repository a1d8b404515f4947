"""Pieces every project-scoped API view shares."""

from leanml_site.roles import Capability

from ..permissions import get_project_for_user


class ProjectScopedMixin:
    """For views under ``projects/<project_pk>/``: access goes through
    ``get_project_for_user``, so a non-member gets 404 and a wrong role 403.

    Subclasses set ``queryset = Model.objects.none()`` (for the schema) and
    implement ``get_project_queryset(project)``.
    """

    read_capability = Capability.VIEW

    def get_project(self, capability=None):
        cached = getattr(self, "_project_cache", {})
        capability = capability or self.read_capability
        if capability not in cached:
            cached[capability] = get_project_for_user(
                self.request.user, self.kwargs["project_pk"], capability=capability
            )
            self._project_cache = cached
        return cached[capability]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return self.get_project_queryset(self.get_project())

    def get_project_queryset(self, project):
        raise NotImplementedError
