"""The API keys page: data scientists and owners create and revoke the
project's keys for machine clients."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from labelling.permissions import get_project_for_user
from leanml_site.roles import Capability

from .forms import ApiKeyForm
from .models import ApiKey
from .services.api_keys import ApiKeyError, api_key_create, api_key_revoke


@login_required
@require_http_methods(["GET", "POST"])
def api_key_list(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    form = ApiKeyForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            key, full = api_key_create(project=project, by=request.user, **form.cleaned_data)
        except ApiKeyError as error:
            form.add_error(error.field, error.message)
        else:
            # Rendered in this response and never again: the secret is not stored.
            created = {"key": key, "full": full}
            form = ApiKeyForm()
    keys = ApiKey.objects.filter(project=project).select_related("created_by").order_by("-id")
    context = {"project": project, "form": form, "keys": keys, "created": created}
    return render(request, "monitoring/api_keys.html", context)


@login_required
@require_POST
def api_key_revoke_page(request, project_pk, pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    key = ApiKey.objects.filter(project=project, pk=pk).first()
    if key is None:
        raise Http404("No such API key.")
    key.project = project
    api_key_revoke(key=key, by=request.user)
    messages.success(request, f"Key “{key.name}” ({key.prefix}) is revoked.")
    return redirect("monitoring:api_key_list", project_pk=project.pk)
