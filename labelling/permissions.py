"""The one place access to a project and its objects is decided.

A user who is not a member of a project gets 404 for it and for everything in
it, so nothing leaks about other projects; a member whose role lacks the
capability gets 403.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from leanml_site.roles import Capability, Role, refusal_text, role_can

from .models import Membership, Project, Sample
from .services import raw


def get_role(user, project) -> str | None:
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )


# One hand-written query: this runs on every project page and API call, and
# the ORM spent more time building its SQL than PostgreSQL spent answering.
_MEMBERSHIP_SQL = (
    f"SELECT m.role, {raw.columns(Project, 'p')} FROM labelling_membership m"  # noqa: S608
    " JOIN labelling_project p ON p.id = m.project_id"
    " WHERE m.project_id = %(project)s AND m.user_id = %(user)s"
)
_ROLE_NAMES = dict(Role.choices)

# For a query that reads the user anyway (the queue API's token check): it
# joins the membership of the URL's project with these, and hands the row to
# remember_membership, so get_project_for_user needs no query of its own.
MEMBERSHIP_JOIN = (
    " LEFT JOIN labelling_membership m ON m.user_id = {user}.id AND m.project_id = %(project)s"
    " LEFT JOIN labelling_project p ON p.id = m.project_id"
)
MEMBERSHIP_COLUMNS = f"m.role, {raw.columns(Project, 'p')}"


def remember_membership(user, project_pk: int, row):
    """Keep ``user``'s membership row of project ``project_pk`` (the
    ``MEMBERSHIP_COLUMNS``; a NULL role: not a member) for this request's
    get_project_for_user. ``user`` is the instance authentication just built."""
    user._leanml_membership = (project_pk, tuple(row))


def get_project_for_user(user, pk, *, capability=Capability.VIEW) -> Project:
    """The project, with ``.role`` set to the user's role on it."""
    if not user.is_authenticated:
        raise Http404("No such project.")
    try:
        pk = int(pk)
    except (ValueError, TypeError):
        raise Http404("No such project.") from None
    if not 0 < pk < 1 << 63:
        raise Http404("No such project.")
    prefetched = getattr(user, "_leanml_membership", None)
    if prefetched is not None and prefetched[0] == pk:
        row = prefetched[1] if prefetched[1][0] is not None else None
    else:
        with raw.prepared_cursor() as cursor:
            cursor.execute(_MEMBERSHIP_SQL, {"project": pk, "user": user.pk})
            row = cursor.fetchone()
    if row is None:
        raise Http404("No such project.")
    role = row[0]
    if not role_can(role, capability):
        raise PermissionDenied(refusal_text(role, capability))
    project = raw.instance(Project, row[1:])
    project.role = role
    project.role_label = _ROLE_NAMES.get(role, role)
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
