"""Refusals in the project settings and new-project pages and the project
API: a clashing label class, a field list that would orphan samples' data,
numbers out of bounds. Each names its input, and nothing is saved."""

import json

import pytest
from django.urls import reverse

from labelling.models import Project
from leanml_site.models import AuditEvent
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


def settings_url(team):
    return reverse("labelling:project_settings", args=[team.project.pk])


def project_post(project, **changes):
    """The settings form as the page posts it, with ``changes`` applied."""
    data = {
        "project-name": project.name,
        "project-description": project.description,
        "project-guidelines": project.guidelines,
        "project-overlap": project.overlap,
        "project-fields_json": json.dumps(project.fields),
    }
    data.update({f"project-{key}": value for key, value in changes.items()})
    return data


def class_post(**values):
    data = {"name": "meh", "description": "", "hotkey": "", "colour": "#4f6df5", "order": 3}
    data.update(values)
    return {f"class-{key}": value for key, value in data.items()}


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"name": "great"}, "name", "A class named 'great' already exists."),
        ({"name": "Great"}, "name", "'great' and 'Great' differ only in case"),
        ({"name": "meh", "hotkey": "1"}, "hotkey", "Key 1 is already used by 'great'."),
        ({"name": "meh", "hotkey": "S"}, "hotkey", "Key s is the labelling page's own"),
    ],
)
def test_settings_refuse_a_class_that_clashes_on_its_field(team, values, field, message):
    response = team.client("owner").post(settings_url(team), class_post(**values))

    assert response.status_code == 200
    class_form = response.context["class_form"]
    assert [e for e in class_form.errors[field] if e.startswith(message)]
    assert team.project.label_classes.count() == 2
    # The project form beside it keeps the saved settings, unbound.
    assert not response.context["form"].is_bound
    assert b"This field is required" not in response.content


def test_settings_add_a_class_with_a_free_name_and_key(team):
    response = team.client("owner").post(settings_url(team), class_post(name="meh", hotkey="M"))

    assert response.status_code == 302
    assert team.project.label_classes.get(name="meh").hotkey == "m"


def test_new_project_refuses_a_class_listed_twice_and_saves_nothing(team):
    response = team.client("expert").post(
        reverse("labelling:project_create"),
        {
            "name": "Twice",
            "overlap": 1,
            "holdout_fraction": 0.2,
            "fields_json": '[{"name": "text", "kind": "text", "shown": true}]',
            "label_classes": "a, a, b",
        },
    )

    assert response.status_code == 200
    assert response.context["form"].errors["label_classes"] == ["Two classes are named 'a'."]
    assert b"a, a, b" in response.content  # the input keeps what was typed
    assert not Project.objects.filter(name="Twice").exists()


def test_api_refuses_a_clashing_class_with_400_on_its_field(team):
    client = team.client("owner")
    url = f"/api/v1/projects/{team.project.pk}/label-classes/"

    by_name = client.post(url, {"name": "great"}, content_type="application/json")
    by_key = client.post(url, {"name": "meh", "hotkey": "2"}, content_type="application/json")
    renamed = client.patch(
        f"{url}{team.classes[1].pk}/", {"name": "great"}, content_type="application/json"
    )

    assert (by_name.status_code, by_name.json()["field"]) == (400, "name")
    assert by_name.json()["message"] == "A class named 'great' already exists."
    assert (by_key.status_code, by_key.json()["field"]) == (400, "hotkey")
    assert by_key.json()["message"] == "Key 2 is already used by 'other'."
    assert (renamed.status_code, renamed.json()["field"]) == (400, "name")
    assert sorted(team.project.label_classes.values_list("name", flat=True)) == ["great", "other"]


@pytest.mark.parametrize(
    ("classes", "field", "message"),
    [
        (
            [{"name": "a"}, {"name": "a"}, {"name": "b"}],
            "label_classes.1.name",
            "Two classes are named 'a'.",
        ),
        (
            [{"name": "Spam"}, {"name": "spam"}],
            "label_classes.1.name",
            "'Spam' and 'spam' differ only in case",
        ),
        (
            [{"name": "a", "hotkey": "1"}, {"name": "b", "hotkey": "1"}],
            "label_classes.1.hotkey",
            "Two classes use key 1: 'a' and 'b'.",
        ),
        ([{"name": "a", "colour": "red"}], "label_classes.0.colour", "The colour must be #"),
    ],
)
def test_api_refuses_a_project_whose_classes_clash(team, classes, field, message):
    response = team.client("expert").post(
        "/api/v1/projects/",
        {"name": "Clash", "label_classes": classes},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["message"].startswith(message)
    assert not Project.objects.filter(name="Clash").exists()


def test_a_class_without_a_hotkey_gets_a_number_no_listed_class_claims(team):
    response = team.client("expert").post(
        "/api/v1/projects/",
        {"name": "Keys", "label_classes": [{"name": "a", "hotkey": "2"}, {"name": "b"}]},
        content_type="application/json",
    )

    assert response.status_code == 201, response.json()
    project = Project.objects.get(name="Keys")
    assert list(project.label_classes.values_list("name", "hotkey")) == [("a", "2"), ("b", "1")]


@pytest.fixture
def with_samples(team):
    team.project.fields = [
        {"name": "text", "kind": "text", "shown": True},
        {"name": "product", "kind": "category", "shown": True},
    ]
    team.project.save()
    for n in range(3):
        SampleFactory(project=team.project, data={"text": f"t{n}", "product": "tea"})
    return team.project


def test_settings_refuse_an_empty_field_list_once_there_are_samples(team, with_samples):
    response = team.client("owner").post(
        settings_url(team), project_post(with_samples, fields_json="[]")
    )

    assert response.status_code == 200
    [error] = response.context["form"].errors["fields_json"]
    assert error.startswith("This project has 3 samples: it needs its fields.")
    assert b"Settings saved" not in response.content
    with_samples.refresh_from_db()
    assert [f["name"] for f in with_samples.fields] == ["text", "product"]


def test_settings_refuse_removing_a_field_samples_hold_but_hiding_it_is_fine(team, with_samples):
    client = team.client("owner")
    text_only = json.dumps([{"name": "text", "kind": "text", "shown": True}])
    hidden = json.dumps(
        [
            {"name": "text", "kind": "text", "shown": True},
            {"name": "product", "kind": "category", "shown": False},
            {"name": "unused", "kind": "number", "shown": True},
        ]
    )

    removed = client.post(settings_url(team), project_post(with_samples, fields_json=text_only))
    saved = client.post(settings_url(team), project_post(with_samples, fields_json=hidden))

    assert removed.context["form"].errors["fields_json"] == [
        "3 samples hold the field 'product': it cannot be removed. "
        'Give it "shown": false to hide it.'
    ]
    assert saved.status_code == 302
    with_samples.refresh_from_db()
    assert [f["name"] for f in with_samples.fields] == ["text", "product", "unused"]
    # A field no sample holds may go again.
    without_unused = json.dumps(json.loads(hidden)[:2])
    again = client.post(settings_url(team), project_post(with_samples, fields_json=without_unused))
    assert again.status_code == 302
    with_samples.refresh_from_db()
    assert [f["name"] for f in with_samples.fields] == ["text", "product"]


def test_a_project_with_samples_keeps_a_text_field(team, with_samples):
    as_category = json.dumps(
        [
            {"name": "text", "kind": "category", "shown": True},
            {"name": "product", "kind": "category", "shown": True},
        ]
    )
    response = team.client("owner").patch(
        f"/api/v1/projects/{team.project.pk}/",
        {"fields": json.loads(as_category)},
        content_type="application/json",
    )

    assert (response.status_code, response.json()["field"]) == (400, "fields")
    assert response.json()["message"].startswith("A project needs a text field: keep 'text'")


def test_api_refuses_an_empty_field_list_once_there_are_samples(team, with_samples):
    response = team.client("owner").patch(
        f"/api/v1/projects/{team.project.pk}/", {"fields": []}, content_type="application/json"
    )

    assert (response.status_code, response.json()["field"]) == (400, "fields")
    with_samples.refresh_from_db()
    assert with_samples.fields


def test_a_project_without_samples_may_leave_its_fields_to_the_first_import(team):
    response = team.client("owner").post(
        settings_url(team), project_post(team.project, fields_json="[]")
    )

    assert response.status_code == 302
    team.project.refresh_from_db()
    assert team.project.fields == []


def test_settings_refuse_overlap_0_on_the_overlap_field(team):
    response = team.client("owner").post(settings_url(team), project_post(team.project, overlap=0))

    assert response.status_code == 200
    assert response.context["form"].errors == {"overlap": ["Overlap must be at least 1."]}
    assert b"project_overlap_gte_1" not in response.content
    team.project.refresh_from_db()
    assert team.project.overlap == 1


def test_new_project_shows_each_number_out_of_bounds_beside_its_input(team):
    response = team.client("expert").post(
        reverse("labelling:project_create"),
        {
            "name": "Numbers",
            "overlap": 0,
            "holdout_fraction": 2,
            "fields_json": '[{"name": "text", "kind": "text", "shown": true}]',
            "label_classes": "a",
        },
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "overlap": ["Overlap must be at least 1."],
        "holdout_fraction": ["The holdout fraction must be at least 0 and below 1."],
    }
    assert b"project_" not in response.content.split(b"<main")[-1]
    assert not Project.objects.filter(name="Numbers").exists()


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"overlap": 0}, "overlap", "Overlap must be at least 1."),
        ({"holdout_fraction": 1}, "holdout_fraction", "The holdout fraction must be at least 0"),
        ({"holdout_fraction": -0.1}, "holdout_fraction", "The holdout fraction must be at least"),
        ({"lease_seconds": 0}, "lease_seconds", "A lease must last at least 30 seconds"),
    ],
)
def test_api_refuses_numbers_out_of_bounds_on_their_field(team, values, field, message):
    client = team.client("owner")
    created = client.post(
        "/api/v1/projects/", {"name": "Bounds", **values}, content_type="application/json"
    )
    changed = client.patch(
        f"/api/v1/projects/{team.project.pk}/", values, content_type="application/json"
    )

    assert (created.status_code, created.json()["field"]) == (400, field)
    assert created.json()["message"].startswith(message)
    assert not Project.objects.filter(name="Bounds").exists()
    assert changed.status_code == 400
    if field == "holdout_fraction":  # fixed once the project exists
        assert changed.json()["message"] == "The split is fixed when a project is created."
    else:
        assert changed.json()["message"].startswith(message)


def test_a_settings_change_is_audited_with_the_value_before_it(team):
    team.client("owner").post(settings_url(team), project_post(team.project, overlap=3))

    event = AuditEvent.objects.get(project=team.project, action="project.update")
    assert (event.before["overlap"], event.after["overlap"]) == (1, 3)
