import pytest
from django.test import Client
from django.urls import reverse

from labelling.models import Membership, Project
from leanml_site.models import AuditEvent
from leanml_site.roles import Role

pytestmark = pytest.mark.django_db


def test_it_lists_only_my_projects(team):
    response = team.client("expert").get(reverse("labelling:project_list"))
    assert response.status_code == 200
    assert b"Reviews" in response.content
    assert b"Someone else" not in response.content


def test_it_redirects_anonymous_to_login(team):
    response = Client().get(reverse("labelling:project_detail", args=[team.project.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_hides_other_projects_with_404(team):
    response = team.client(team.outsider).get(
        reverse("labelling:project_detail", args=[team.project.pk])
    )
    assert response.status_code == 404


def test_creating_a_project_makes_me_owner(team):
    client = team.client("expert")
    response = client.post(
        reverse("labelling:project_create"),
        {
            "name": "Tickets",
            "overlap": 2,
            "holdout_fraction": 0.1,
            "fields_json": '[{"name": "body", "kind": "text", "shown": true}]',
            "label_classes": "refund, billing",
        },
    )
    project = Project.objects.get(name="Tickets")
    assert response.status_code == 302
    assert Membership.objects.get(project=project).role == Role.OWNER
    assert list(project.label_classes.values_list("name", "hotkey")) == [
        ("refund", "1"),
        ("billing", "2"),
    ]
    assert AuditEvent.objects.filter(project=project, action="project.create").exists()


def test_it_rejects_bad_field_config(team):
    response = team.client("expert").post(
        reverse("labelling:project_create"),
        {
            "name": "Bad",
            "overlap": 1,
            "holdout_fraction": 0.2,
            "fields_json": '[{"name": "body", "kind": "image"}]',
        },
    )
    assert response.status_code == 200
    assert b"kind must be one of text, number, category" in response.content
    assert not Project.objects.filter(name="Bad").exists()


@pytest.mark.parametrize("role", ["expert", "data_scientist", "product_manager"])
def test_only_owners_manage_members(team, role):
    response = team.client(role).post(
        reverse("labelling:members", args=[team.project.pk]),
        {"username": "outsider", "role": "owner"},
    )
    assert response.status_code == 403
    assert not Membership.objects.filter(project=team.project, user=team.outsider).exists()


def test_owner_adds_member_and_it_is_audited(team):
    response = team.client("owner").post(
        reverse("labelling:members", args=[team.project.pk]),
        {"username": "outsider", "role": "expert"},
    )
    assert response.status_code == 302
    assert Membership.objects.get(project=team.project, user=team.outsider).role == "expert"
    event = AuditEvent.objects.get(project=team.project, action="membership.set")
    assert event.after == {"user": "outsider", "role": "expert"}


def test_last_owner_cannot_be_removed(team):
    owner_membership = Membership.objects.get(project=team.project, role="owner")
    team.client("owner").post(
        reverse("labelling:member_remove", args=[team.project.pk, owner_membership.pk])
    )
    assert Membership.objects.filter(pk=owner_membership.pk).exists()


def test_audit_log_is_for_owners_only(team):
    url = reverse("labelling:audit", args=[team.project.pk])
    assert team.client("owner").get(url).status_code == 200
    assert team.client("expert").get(url).status_code == 403
    assert team.client(team.outsider).get(url).status_code == 404


def test_audit_log_shows_values_as_wrapped_key_value_lists_in_json(team):
    long_text = "word " * 2_000 + "<b>end</b>"
    AuditEvent.objects.create(
        project=team.project,
        actor=team.users["owner"],
        action="alert.acknowledge",
        target_type="monitoring.alert",
        target_id="2",
        before={"acknowledged": False, "note": None},
        after={"acknowledged": True, "note": "seen <i>x</i>", "mix": {"random": 0.5}},
    )
    AuditEvent.objects.create(
        project=team.project, action="sample.revise", after={"data": {"text": long_text}}
    )
    AuditEvent.objects.create(project=team.project, action="odd", after=["a", 1])

    response = team.client("owner").get(reverse("labelling:audit", args=[team.project.pk]))

    page = response.content.decode()
    assert "<dt>acknowledged</dt>\n  <dd><code>false</code></dd>" in page
    assert "<dd><code>true</code></dd>" in page
    assert "<dd><code>null</code></dd>" in page
    assert "<code>seen &lt;i&gt;x&lt;/i&gt;</code>" in page  # escaped
    assert "<code>{&quot;random&quot;: 0.5}</code>" in page  # JSON, not a Python dict
    assert "<code>[&quot;a&quot;, 1]</code>" in page
    assert "False" not in page and "&#x27;acknowledged&#x27;" not in page
    # The long value: shortened, the whole of it in a details element, escaped.
    summary = page.split("<details><summary><code>")[1].split("</code>")[0]
    assert summary.startswith("{&quot;text&quot;: &quot;word word") and summary.endswith("…")
    assert len(summary.replace("&quot;", '"')) <= 120
    assert "&lt;b&gt;end&lt;/b&gt;&quot;}</pre></details>" in page
    assert 'class="audit"' in page


def test_api_lists_projects_with_my_role(team):
    response = team.client("product_manager").get("/api/v1/projects/")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(p["name"], p["role"]) for p in results] == [("Reviews", "product_manager")]


def test_api_hides_other_projects(team):
    response = team.client(team.outsider).get(f"/api/v1/projects/{team.project.pk}/")
    assert response.status_code == 404
    assert response.json()["message"]


def test_api_error_names_the_field(team):
    response = team.client("owner").post(
        f"/api/v1/projects/{team.project.pk}/members/",
        {"username": "nobody", "role": "expert"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "username"
    assert "nobody" in response.json()["message"]
