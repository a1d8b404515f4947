"""API: consensus list, adjudication and the agreement report."""

import pytest
from django.test import Client

from labelling.models import Adjudication, Annotation, Sample
from labelling.services.consensus import consensus_refresh
from leanml_site.models import AuditEvent
from tests.factories import LabelClassFactory, SampleFactory

pytestmark = pytest.mark.django_db
C = Sample.Consensus


def annotate(sample, user, label_class, seconds=None):
    Annotation.objects.create(
        project=sample.project, sample=sample, annotator=user, label=label_class, seconds=seconds
    )


@pytest.fixture
def states(team):
    """Overlap 2: one agreed (great), one disputed, one pending, one unlabelled."""
    team.project.overlap = 2
    team.project.save()
    great, other = team.classes
    expert, scientist = team.users["expert"], team.users["data_scientist"]
    agreed, disputed, pending, empty = (SampleFactory(project=team.project) for _ in range(4))
    annotate(agreed, expert, great, 4)
    annotate(agreed, scientist, great, 6)
    annotate(disputed, expert, great, 4)
    annotate(disputed, scientist, other, 6)
    annotate(pending, expert, other, 4)
    consensus_refresh(project=team.project, sample_ids=[agreed.pk, disputed.pk, pending.pk])
    return {"agreed": agreed, "disputed": disputed, "pending": pending, "none": empty}


def consensus_url(team):
    return f"/api/v1/projects/{team.project.pk}/consensus/"


def adjudicate_url(team, sample):
    return f"/api/v1/projects/{team.project.pk}/samples/{sample.pk}/adjudicate/"


def agreement_url(team):
    return f"/api/v1/projects/{team.project.pk}/agreement/"


# --- GET consensus ---------------------------------------------------------------------------


def test_it_lists_every_samples_consensus(team, states):
    response = team.client("product_manager").get(consensus_url(team))
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["results"]}
    assert set(rows) == {s.pk for s in states.values()}
    agreed = rows[states["agreed"].pk]
    assert agreed == {
        "id": states["agreed"].pk,
        "external_id": states["agreed"].external_id,
        "consensus_state": "agreed",
        "consensus_label": team.classes[0].pk,
        "consensus_label_name": "great",
        "status": "active",
        "split": states["agreed"].split,
    }
    assert rows[states["disputed"].pk]["consensus_label"] is None
    assert rows[states["disputed"].pk]["consensus_label_name"] is None


def test_it_filters_by_state_and_label(team, states):
    client = team.client("expert")
    disputed = client.get(consensus_url(team), {"state": "disputed"}).json()["results"]
    assert [r["id"] for r in disputed] == [states["disputed"].pk]
    several = client.get(consensus_url(team), {"state": "agreed,pending"}).json()["results"]
    assert {r["id"] for r in several} == {states["agreed"].pk, states["pending"].pk}
    by_name = client.get(consensus_url(team), {"label": "other"}).json()["results"]
    assert [r["id"] for r in by_name] == [states["pending"].pk]  # provisional label
    by_id = client.get(consensus_url(team), {"label": team.classes[0].pk}).json()["results"]
    assert [r["id"] for r in by_id] == [states["agreed"].pk]


def test_it_is_cursor_paginated(team, states):
    client = team.client("owner")
    first = client.get(consensus_url(team), {"page_size": 3}).json()
    assert len(first["results"]) == 3
    assert first["next"] and "cursor=" in first["next"]
    second = client.get(first["next"]).json()
    seen = [r["id"] for r in first["results"] + second["results"]]
    assert seen == sorted(s.pk for s in states.values())
    assert second["next"] is None


def test_bad_filters_name_the_field_and_value(team, states):
    client = team.client("owner")
    response = client.get(consensus_url(team), {"state": "agreed,settled"})
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "state"
    assert body["message"].startswith("Unknown state 'settled'; use one of: none, pending")
    response = client.get(consensus_url(team), {"label": "nope"})
    assert response.status_code == 400
    assert response.json()["field"] == "label"
    assert response.json()["message"] == (
        "No label class 'nope' in this project; use one of: great, other (or their ids)."
    )


def test_a_label_id_from_another_project_does_not_filter(team, states):
    foreign = LabelClassFactory(project=team.other_project)
    response = team.client("owner").get(consensus_url(team), {"label": foreign.pk})
    assert response.status_code == 400
    assert response.json()["field"] == "label"


def test_consensus_list_hides_other_projects_and_needs_login(team, states):
    assert team.client(team.outsider).get(consensus_url(team)).status_code == 404
    assert Client().get(consensus_url(team)).status_code == 403


# --- POST adjudicate ----------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "name"])
def test_expert_adjudicates_by_label_id_or_name(team, states, by):
    _, other = team.classes
    sample = states["disputed"]
    label = other.pk if by == "id" else "other"
    response = team.client("expert").post(
        adjudicate_url(team, sample), {"label": label, "note": "late delivery"}, "application/json"
    )
    assert response.status_code == 201
    body = response.json()
    adjudication = Adjudication.objects.get(sample=sample)
    assert body["id"] == adjudication.pk
    assert body["sample"] == sample.pk
    assert (body["label"], body["label_name"], body["by"]) == (other.pk, "other", "expert")
    assert (body["gold"], body["note"]) == (False, "late delivery")
    assert (body["consensus_state"], body["consensus_label"]) == ("adjudicated", other.pk)
    sample.refresh_from_db()
    assert (sample.consensus_state, sample.consensus_label) == (C.ADJUDICATED, other)
    event = AuditEvent.objects.get(action="consensus.adjudicate")
    assert event.before == {"state": "disputed", "label": None}


def test_a_class_named_like_a_number_is_found_by_name_first(team, states):
    numeric = LabelClassFactory(project=team.project, name=str(team.classes[0].pk))
    response = team.client("owner").post(
        adjudicate_url(team, states["disputed"]), {"label": numeric.name}, "application/json"
    )
    assert response.status_code == 201
    assert response.json()["label"] == numeric.pk


def test_owner_marks_gold(team, states):
    response = team.client("owner").post(
        adjudicate_url(team, states["agreed"]),
        {"label": "other", "gold": True},
        "application/json",
    )
    assert response.status_code == 201
    assert response.json()["consensus_state"] == "gold"
    states["agreed"].refresh_from_db()
    assert states["agreed"].consensus_state == C.GOLD


def test_expert_may_not_mark_gold(team, states):
    response = team.client("expert").post(
        adjudicate_url(team, states["disputed"]),
        {"label": "great", "gold": True},
        "application/json",
    )
    assert response.status_code == 403
    assert response.json()["message"] == "Only owners mark an answer as gold."
    assert not Adjudication.objects.exists()


@pytest.mark.parametrize("role", ["product_manager", "data_scientist"])
def test_other_roles_may_not_adjudicate(team, states, role):
    response = team.client(role).post(
        adjudicate_url(team, states["disputed"]), {"label": "great"}, "application/json"
    )
    assert response.status_code == 403
    assert not Adjudication.objects.exists()


def test_adjudicate_hides_other_projects_and_needs_login(team, states):
    url = adjudicate_url(team, states["disputed"])
    assert (
        team.client(team.outsider).post(url, {"label": "great"}, "application/json").status_code
        == 404
    )
    assert Client().post(url, {"label": "great"}, "application/json").status_code == 403
    foreign = SampleFactory(project=team.other_project)
    assert (
        team.client("owner")
        .post(adjudicate_url(team, foreign), {"label": "great"}, "application/json")
        .status_code
        == 404
    )
    assert not Adjudication.objects.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "This field is required."),
        ({"label": ""}, "Give the label class's id or name."),
        ({"label": True}, "Give the label class's id or name."),
        ({"label": "nope"}, "No label class 'nope' in this project; use one of: great, other"),
        ({"label": 99999999}, "No label class '99999999' in this project"),
    ],
)
def test_bad_labels_are_rejected_with_the_field(team, states, payload, message):
    response = team.client("owner").post(
        adjudicate_url(team, states["disputed"]), payload, "application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "label"
    assert response.json()["message"].startswith(message)
    assert not Adjudication.objects.exists()


def test_a_label_of_another_project_is_rejected(team, states):
    foreign = LabelClassFactory(project=team.other_project, name="secret")
    response = team.client("owner").post(
        adjudicate_url(team, states["disputed"]), {"label": foreign.pk}, "application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "label"
    assert "secret" not in response.json()["message"]
    states["disputed"].refresh_from_db()
    assert states["disputed"].consensus_state == C.DISPUTED


# --- GET agreement ---------------------------------------------------------------------------------


def test_agreement_report_as_json(team, states):
    response = team.client("product_manager").get(agreement_url(team))
    assert response.status_code == 200
    body = response.json()
    assert (body["labels"], body["items"], body["annotators"], body["items_multi"]) == (5, 3, 2, 2)
    assert body["classes"] == ["great", "other"]
    # One agreed and one split item between the same two annotators.
    assert body["observed_agreement"]["value"] == pytest.approx(0.5)
    # Expert: great, great; scientist: great, other → p_o .5, p_e 1·.5 → κ 0.
    assert body["cohen_kappa"]["value"] == pytest.approx(0.0)
    assert body["cohen_kappa"]["items"] == 2
    expert = next(a for a in body["per_annotator"] if a["annotator"] == "expert")
    assert expert["labels"] == 3
    assert expert["compared"] == 1  # only the agreed sample has a consensus others shared
    assert expert["agreement_with_consensus"] == 1.0
    assert expert["labels_per_hour"] == pytest.approx(3 * 3600 / 12)
    assert expert["median_seconds"] == 4.0
    assert expert["kappa_with_consensus"]["value"] is None
    assert "undefined" in expert["kappa_with_consensus"]["reason"]
    assert body["pairs"][0]["a"] in {"expert", "data_scientist"}
    assert body["confusion"]["counts"] == [[1, 1], [1, 0]]


def test_agreement_of_an_empty_project_explains_itself(team):
    body = team.client("owner").get(agreement_url(team)).json()
    assert body["krippendorff_alpha"] == {
        "value": None,
        "items": 0,
        "reason": "no item has labels from two annotators",
        "detail": "",
    }
    assert body["confusion"] is None


def test_agreement_rejects_a_bad_min_pair_items(team, states):
    response = team.client("owner").get(agreement_url(team), {"min_pair_items": "0"})
    assert response.status_code == 400
    assert response.json()["field"] == "min_pair_items"


def test_agreement_hides_other_projects_and_needs_login(team, states):
    assert team.client(team.outsider).get(agreement_url(team)).status_code == 404
    assert Client().get(agreement_url(team)).status_code == 403
