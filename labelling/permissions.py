"""The one place access to a project and its objects is decided.

A user who is not a member of a project gets 404 for it and for everything in
it, so nothing leaks about other projects; a member whose role lacks the
capability gets 403.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from leanml_site.roles import Capability, role_can

from .models import Membership, Project, Sample


def get_role(user, project) -> str | None:
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )


def get_project_for_user(user, pk, *, capability=Capability.VIEW) -> Project:
    """The project, with ``.role`` set to the user's role on it."""
    if not user.is_authenticated:
        raise Http404("No such project.")
    try:
        membership = Membership.objects.select_related("project").get(project_id=pk, user=user)
    except (Membership.DoesNotExist, ValueError, TypeError):
        raise Http404("No such project.") from None
    if not role_can(membership.role, capability):
        raise PermissionDenied(
            f"Your role ({membership.get_role_display()}) may not {capability} in this project."
        )
    project = membership.project
    project.role = membership.role
    project.role_label = membership.get_role_display()
    return project


def get_sample_for_user(user, project_pk, sample_pk, *, capability=Capability.VIEW) -> Sample:
    """The sample, with ``.project`` carrying the user's role."""
    project = get_project_for_user(user, project_pk, capability=capability)
    try:
        sample = Sample.objects.get(project=project, pk=sample_pk)
    except (Sample.DoesNotExist, ValueError, TypeError):
        raise Http404("No such sample.") from None
    sample.project = project
    return sample


def projects_for_user(user):
    return Project.objects.filter(memberships__user=user).order_by("name", "id")
