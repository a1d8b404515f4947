import pytest
from django.test import Client

from labelling.models import Annotation, Flag, Sample, SampleRevision
from labelling.services.cleaning import sample_flag, sample_revise
from leanml_site.models import AuditEvent
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(team):
    team.project.fields = [
        {"name": "text", "kind": "text", "shown": True},
        {"name": "stars", "kind": "number", "shown": True},
    ]
    team.project.save()
    return team.project


def make(project, external_id, text="some text", **fields):
    return SampleFactory(
        project=project, external_id=external_id, data={"text": text, "stars": 3}, **fields
    )


def samples_url(project, suffix=""):
    return f"/api/v1/projects/{project.pk}/samples/{suffix}"


def post(client, url, data):
    return client.post(url, data, content_type="application/json")


# --- list and detail --------------------------------------------------------------------


def test_it_lists_samples_with_cursor_pages(team, project):
    for i in range(5):
        make(project, f"s{i}")
    client = team.client("product_manager")
    first = client.get(samples_url(project), {"page_size": 2}).json()
    assert [s["external_id"] for s in first["results"]] == ["s0", "s1"]
    assert first["previous"] is None
    second = client.get(first["next"]).json()
    assert [s["external_id"] for s in second["results"]] == ["s2", "s3"]
    assert client.get(second["previous"]).json()["results"] == first["results"]
    assert "data" not in first["results"][0]  # the list stays light; the detail has the data


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"label": "great"}, ["labelled"]),
        ({"label": "none"}, ["plain", "flagged", "holdout"]),
        ({"consensus_state": "agreed"}, ["labelled"]),
        ({"flagged": "any"}, ["flagged"]),
        ({"flagged": "none"}, ["labelled", "plain", "holdout"]),
        ({"flagged": "corrupt"}, ["flagged"]),
        ({"split": "holdout"}, ["holdout"]),
        ({"source": "monitoring"}, ["plain"]),
        ({"status": "excluded"}, ["flagged"]),
        ({"annotator": "expert"}, ["labelled"]),
        ({"q": "NEEDLE"}, ["holdout"]),
    ],
)
def test_list_filters_match_the_browser(team, project, params, expected):
    great = team.classes[0]
    labelled = make(project, "labelled", consensus_state="agreed", consensus_label=great)
    Annotation.objects.create(
        project=project, sample=labelled, annotator=team.users["expert"], label=great
    )
    make(project, "plain", source="monitoring")
    sample_flag(sample=make(project, "flagged"), by=team.users["expert"], kind="corrupt")
    make(project, "holdout", "a needle in hay", split="holdout")
    Sample.objects.exclude(external_id="holdout").update(split="train")
    if params.get("label") == "great":
        params = {"label": great.pk}
    if params.get("annotator") == "expert":
        params = {"annotator": team.users["expert"].pk}

    response = team.client("expert").get(samples_url(project), params)

    assert response.status_code == 200
    assert sorted(s["external_id"] for s in response.json()["results"]) == sorted(expected)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"label": "great"}, "label"),
        ({"consensus_state": "sure"}, "consensus_state"),
        ({"flagged": "spam"}, "flagged"),
        ({"annotator": "bob"}, "annotator"),
    ],
)
def test_bad_filters_are_400_naming_the_field(team, project, params, field):
    response = team.client("expert").get(samples_url(project), params)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["message"]


def test_detail_has_current_data_revision_consensus_and_open_flags(team, project):
    sample = make(project, "x1", "old")
    sample_revise(sample=sample, by=team.users["expert"], changes={"text": "new"})
    flag = sample_flag(sample=sample, by=team.users["expert"], kind="ambiguous")
    body = team.client("product_manager").get(samples_url(project, f"{sample.pk}/")).json()
    assert body["data"] == {"text": "new", "stars": 3}
    assert body["revision"] == 2 and body["consensus_state"] == "none"
    assert body["status"] == "excluded"
    assert [(f["id"], f["kind"]) for f in body["open_flags"]] == [(flag.pk, "ambiguous")]


def test_samples_api_needs_membership(team, project):
    sample = make(project, "x1")
    assert Client().get(samples_url(project)).status_code in {401, 403}
    outsider = team.client(team.outsider)
    assert outsider.get(samples_url(project)).status_code == 404
    assert outsider.get(samples_url(project, f"{sample.pk}/")).status_code == 404
    elsewhere = SampleFactory(project=team.other_project)
    assert team.client("owner").get(samples_url(project, f"{elsewhere.pk}/")).status_code == 404


# --- revisions --------------------------------------------------------------------------


def test_an_expert_corrects_fields_and_lists_revisions(team, project):
    sample = make(project, "x1", "teh")
    client = team.client("expert")
    url = samples_url(project, f"{sample.pk}/revisions/")
    response = post(client, url, {"changes": {"text": "the", "stars": 4}, "note": "typo"})
    assert response.status_code == 201
    assert response.json()["number"] == 2 and response.json()["author"] == "expert"
    assert response.json()["data"] == {"text": "the", "stars": 4}

    listed = client.get(url).json()["results"]
    assert [(r["number"], r["author"], r["note"]) for r in listed] == [
        (1, None, "as imported"),
        (2, "expert", "typo"),
    ]
    assert listed[0]["data"] == {"text": "teh", "stars": 3}
    sample.refresh_from_db()
    assert sample.revision == 2


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"changes": {"stars": "abc"}}, "changes.stars", "'stars' is a number; 'abc'"),
        ({"changes": {"titel": "x"}}, "changes.titel", "Unknown field 'titel'"),
        ({"changes": {"stars": 3}}, "changes.stars", "Nothing changed"),
        ({"changes": {}}, "changes", "at least one field"),
        ({"note": "no changes"}, "changes", "required"),
        ({"changes": "text=x"}, "changes", "dictionary"),
        ({"changes": {"text": ""}}, "changes.text", "the project's text field and needs a value"),
        ({"changes": {"text": " \n"}}, "changes.text", "the project's text field"),
        ({"changes": {"text": None}}, "changes.text", "the project's text field"),
        ({"changes": {"text": "x" * 100_001}}, "changes.text", "at most 100,000"),
        ({"changes": {"text": "ok"}, "note": "n" * 2001}, "note", "no more than 2000"),
    ],
)
def test_bad_corrections_are_400_naming_the_field(team, project, payload, field, message):
    sample = make(project, "x1")
    response = post(team.client("expert"), samples_url(project, f"{sample.pk}/revisions/"), payload)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert message in response.json()["message"]
    assert not SampleRevision.objects.exists()


def test_product_managers_may_read_but_not_correct(team, project):
    sample = make(project, "x1")
    url = samples_url(project, f"{sample.pk}/revisions/")
    client = team.client("product_manager")
    assert client.get(url).status_code == 200
    assert post(client, url, {"changes": {"text": "x"}}).status_code == 403
    assert post(team.client(team.outsider), url, {"changes": {"text": "x"}}).status_code == 404
    assert post(Client(), url, {"changes": {"text": "x"}}).status_code in {401, 403}
    assert not SampleRevision.objects.exists()


# --- flags ------------------------------------------------------------------------------


def test_an_expert_flags_a_duplicate_by_external_id_and_resolves_it(team, project):
    sample, original = make(project, "x1"), make(project, "orig")
    client = team.client("expert")
    url = samples_url(project, f"{sample.pk}/flags/")
    response = post(client, url, {"kind": "duplicate", "duplicate_of": "orig", "note": "same"})
    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["duplicate_of"], body["created_by"]) == (
        "duplicate",
        "orig",
        "expert",
    )
    sample.refresh_from_db()
    assert sample.status == "excluded"
    assert Flag.objects.get().duplicate_of == original

    response = post(client, f"{url}{body['id']}/resolve/", {"resolution": "not a duplicate"})
    assert response.status_code == 200
    assert response.json()["resolved_by"] == "expert"
    assert response.json()["resolution"] == "not a duplicate"
    sample.refresh_from_db()
    assert sample.status == "active"
    assert [f["id"] for f in client.get(url).json()["results"]] == [body["id"]]
    assert AuditEvent.objects.filter(action__in=["sample.flag", "flag.resolve"]).count() == 2


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"kind": "spam"}, "kind", "not a valid choice"),
        ({"kind": "duplicate"}, "duplicate_of", "needs the sample it duplicates"),
        ({"kind": "duplicate", "duplicate_of": "nope"}, "duplicate_of", "No sample with id 'nope'"),
        ({"kind": "duplicate", "duplicate_of": "x1"}, "duplicate_of", "itself"),
        ({"kind": "corrupt", "duplicate_of": "other"}, "duplicate_of", "Only a duplicate flag"),
        ({"kind": "corrupt", "note": "n" * 2001}, "note", "no more than 2000"),
    ],
)
def test_bad_flags_are_400_naming_the_field(team, project, payload, field, message):
    sample = make(project, "x1")
    make(project, "other")
    response = post(team.client("expert"), samples_url(project, f"{sample.pk}/flags/"), payload)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert message in response.json()["message"]
    assert not Flag.objects.exists()


def test_resolving_needs_a_resolution_and_the_flag_of_this_sample(team, project):
    sample, other = make(project, "x1"), make(project, "x2")
    flag = sample_flag(sample=sample, by=team.users["expert"], kind="corrupt")
    client = team.client("expert")
    response = post(client, samples_url(project, f"{sample.pk}/flags/{flag.pk}/resolve/"), {})
    assert response.status_code == 400 and response.json()["field"] == "resolution"
    wrong = samples_url(project, f"{other.pk}/flags/{flag.pk}/resolve/")
    assert post(client, wrong, {"resolution": "x"}).status_code == 404
    flag.refresh_from_db()
    assert flag.resolved_at is None


def test_product_managers_may_not_flag_or_resolve(team, project):
    sample = make(project, "x1")
    flag = sample_flag(sample=sample, by=team.users["expert"], kind="corrupt")
    client = team.client("product_manager")
    url = samples_url(project, f"{sample.pk}/flags/")
    assert client.get(url).status_code == 200
    assert post(client, url, {"kind": "ambiguous"}).status_code == 403
    assert post(client, f"{url}{flag.pk}/resolve/", {"resolution": "x"}).status_code == 403
    assert post(team.client(team.outsider), url, {"kind": "ambiguous"}).status_code == 404
    assert Flag.objects.count() == 1 and Flag.objects.get().resolved_at is None


def test_schema_documents_the_samples_endpoints(team):
    response = team.client("expert").get("/api/schema/")
    assert response.status_code == 200
    body = response.content.decode()
    for path in (
        "/api/v1/projects/{project_pk}/samples/:",
        "/api/v1/projects/{project_pk}/samples/{sample_pk}/revisions/:",
        "/api/v1/projects/{project_pk}/samples/{sample_pk}/flags/{id}/resolve/:",
    ):
        assert path in body
