from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from leanml_site.models import AuditEvent
from leanml_site.roles import Capability, role_can

from ..forms import LabelClassForm, MemberForm, ProjectCreateForm, ProjectForm
from ..models import LabelClass, Membership, QueueItem, Sample
from ..permissions import get_project_for_user, projects_for_user
from ..services.projects import (
    ProjectError,
    label_class_save,
    membership_remove,
    membership_set,
    project_create,
    project_update,
)


@login_required
def project_list(request):
    projects = projects_for_user(request.user).annotate(sample_count=Count("samples"))
    roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
    for project in projects:
        project.role = roles.get(project.pk)
    return render(request, "labelling/project_list.html", {"projects": projects})


@login_required
@require_http_methods(["GET", "POST"])
def project_create_view(request):
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = {k: v for k, v in form.cleaned_data.items() if k != "fields_json"}
        try:
            project = project_create(
                by=request.user, fields=form.cleaned_data["fields_json"], **data
            )
        except ProjectError as error:
            _show_refusal(form, error)
        else:
            messages.success(request, f"Project “{project.name}” created. You are its owner.")
            return redirect(project)
    return render(request, "labelling/project_form.html", {"form": form})


def _show_refusal(form, error):
    """A service's refusal beside the input it names: ``fields`` is the form's
    ``fields_json``, ``label_classes.2.name`` its ``label_classes``."""
    field = (error.field or "").split(".")[0]
    field = {"fields": "fields_json"}.get(field, field)
    form.add_error(field if field in form.fields else None, str(error))


@login_required
def project_detail(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    samples = Sample.objects.filter(project=project)
    by_state = dict(samples.values_list("consensus_state").annotate(n=Count("id")).order_by())
    context = {
        "project": project,
        "sample_count": sum(by_state.values()),
        "by_state": [(Sample.Consensus(k).label, v) for k, v in sorted(by_state.items())],
        "queue_open": QueueItem.objects.filter(project=project, state="open").count(),
        "label_classes": project.label_classes.all(),
        "can": {cap.value: role_can(project.role, cap) for cap in Capability},
    }
    return render(request, "labelling/project_detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.MANAGE)
    # Each form is bound only when it is the one posted: a refused class must
    # not empty the project form beside it, nor the other way round.
    posted = request.POST if request.method == "POST" else {}
    form = ProjectForm(
        request.POST if "project-name" in posted else None, instance=project, prefix="project"
    )
    class_form = LabelClassForm(project=project, prefix="class")
    if form.is_bound and form.is_valid():
        changes = {
            k: v
            for k, v in form.cleaned_data.items()
            if k not in {"fields_json", "holdout_fraction"}
        }
        changes["fields"] = form.cleaned_data["fields_json"]
        try:
            project_update(project=project, by=request.user, **changes)
        except ProjectError as error:
            _show_refusal(form, error)
        else:
            messages.success(request, "Settings saved.")
            return redirect("labelling:project_settings", project.pk)
    if form.is_bound:
        # The form wrote its values onto the project; the page shows the saved ones.
        project.refresh_from_db()
    if "class-name" in posted:
        instance = None
        if posted.get("class_id"):
            instance = get_object_or_404(LabelClass, project=project, pk=posted["class_id"])
        class_form = LabelClassForm(posted, project=project, prefix="class", instance=instance)
        if class_form.is_valid():
            try:
                label_class_save(label_class=class_form.instance, by=request.user)
            except ProjectError as error:
                _show_refusal(class_form, error)
            else:
                messages.success(request, f"Label class “{class_form.instance.name}” saved.")
                return redirect("labelling:project_settings", project.pk)
    return render(
        request,
        "labelling/project_settings.html",
        {
            "project": project,
            "form": form,
            "class_form": class_form,
            "label_classes": project.label_classes.all(),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def members(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    can_manage = role_can(project.role, Capability.MANAGE)
    form = MemberForm(request.POST or None)
    if request.method == "POST":
        project = get_project_for_user(request.user, project_pk, capability=Capability.MANAGE)
        if form.is_valid():
            try:
                membership_set(
                    project=project,
                    user=form.cleaned_data["username"],
                    role=form.cleaned_data["role"],
                    by=request.user,
                )
            except ValueError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request,
                    f"{form.cleaned_data['username']} is now "
                    f"{dict(form.fields['role'].choices)[form.cleaned_data['role']]}.",
                )
                return redirect("labelling:members", project.pk)
    memberships = project.memberships.select_related("user").order_by("role", "user__username")
    return render(
        request,
        "labelling/members.html",
        {"project": project, "memberships": memberships, "form": form, "can_manage": can_manage},
    )


@login_required
@require_POST
def member_remove(request, project_pk, membership_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.MANAGE)
    membership = get_object_or_404(Membership, project=project, pk=membership_pk)
    try:
        membership_remove(membership=membership, by=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user} removed from the project.")
    return redirect("labelling:members", project.pk)


@login_required
def audit(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.AUDIT)
    events = AuditEvent.objects.filter(project=project).select_related("actor").order_by("-id")
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(request, "labelling/audit.html", {"project": project, "page": page})
