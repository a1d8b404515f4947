"""Queue next / submit, labels and reprioritising over the API."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from labelling.api.queue import AnnotationSerializer, NextSerializer, SubmitNextResultSerializer
from labelling.models import Annotation, Lease, Membership, QueueItem
from labelling.services.annotations import annotation_submit
from labelling.services.queue import queue_add
from leanml_site.models import AuditEvent
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


def api(team, role_or_user=None):
    client = APIClient()
    if role_or_user is not None:
        user = team.users[role_or_user] if isinstance(role_or_user, str) else role_or_user
        client.force_authenticate(user)
    return client


def base(team):
    return f"/api/v1/projects/{team.project.pk}"


@pytest.fixture
def queued(team):
    samples = [SampleFactory(project=team.project, data={"text": f"review {n}"}) for n in range(3)]
    for priority, sample in zip([1, 5, 3], samples, strict=True):
        queue_add(
            project=team.project,
            sample_ids=[sample.pk],
            priority=priority,
            strategy="uncertainty",
            reason=f"margin {priority}",
            score=0.1 * priority,
        )
    return samples


def test_next_hands_out_the_top_sample_with_its_reason_and_lease(team, queued):
    client = api(team, "expert")
    response = client.post(f"{base(team)}/queue/next/", format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["sample"]["id"] == queued[1].pk
    assert body["sample"]["data"] == {"text": "review 1"}
    assert body["item"]["reason"] == "margin 5" and body["item"]["strategy"] == "uncertainty"
    assert body["expires_at"]
    lease = Lease.objects.get()
    assert lease.pk == body["lease"] and lease.user == team.users["expert"]
    again = client.post(f"{base(team)}/queue/next/", format="json").json()
    assert again["lease"] == body["lease"]
    following = client.post(
        f"{base(team)}/queue/next/", {"exclude": [body["item"]["id"]]}, format="json"
    ).json()
    assert following["sample"]["id"] == queued[2].pk


def test_next_answers_204_when_nothing_is_left(team):
    response = api(team, "expert").post(f"{base(team)}/queue/next/")
    assert response.status_code == 204
    assert not Lease.objects.exists()


def test_next_works_with_a_token(team, queued):
    token = Token.objects.create(user=team.users["data_scientist"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.post(f"{base(team)}/queue/next/").status_code == 200


def test_next_refuses_anonymous_wrong_role_and_outsiders(team, queued):
    assert api(team).post(f"{base(team)}/queue/next/").status_code in (401, 403)
    response = api(team, "product_manager").post(f"{base(team)}/queue/next/")
    assert response.status_code == 403
    assert "may not label" in response.json()["message"]
    assert api(team, team.outsider).post(f"{base(team)}/queue/next/").status_code == 404
    assert not Lease.objects.exists()


def test_next_rejects_bad_exclude(team, queued):
    response = api(team, "expert").post(
        f"{base(team)}/queue/next/", {"exclude": ["x"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "exclude.0"


def test_submit_by_name_records_a_label(team, queued):
    client = api(team, "expert")
    client.post(f"{base(team)}/queue/next/")
    response = client.post(
        f"{base(team)}/queue/submit/",
        {"sample": queued[1].pk, "label": "great", "seconds": 4.5},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["label_name"] == "great" and body["kind"] == "label"
    assert body["annotator"] == "expert" and body["seconds"] == 4.5
    annotation = Annotation.objects.get()
    assert annotation.pk == body["id"] and annotation.label == team.classes[0]
    assert QueueItem.objects.get(sample=queued[1]).state == "done"
    assert not Lease.objects.exists()


def test_submit_by_id_and_skip(team, queued):
    client = api(team, "owner")
    response = client.post(
        f"{base(team)}/queue/submit/",
        {"sample": queued[0].pk, "label": team.classes[1].pk},
        format="json",
    )
    assert response.status_code == 201 and response.json()["label"] == team.classes[1].pk
    response = client.post(
        f"{base(team)}/queue/submit/", {"sample": queued[2].pk, "skip": True}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["kind"] == "skip" and response.json()["label"] is None
    assert Annotation.objects.count() == 2


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (
            {"label": "refunds"},
            "label",
            "Unknown label 'refunds': this project's labels are great, other.",
        ),
        ({}, "label", "Choose a label (or skip the sample)."),
        ({"label": "great", "skip": True}, "label", "Give a label or skip, not both."),
        ({"label": "great", "seconds": -1}, "seconds", None),
        (
            {"label": "great", "sample": 10**9},
            "sample",
            "No sample with id 1000000000 in this project.",
        ),
        ({"label": "great", "sample": "abc"}, "sample", None),
    ],
)
def test_submit_rejects_bad_input_naming_the_field(team, queued, payload, field, message):
    payload = {"sample": queued[0].pk, **payload}
    response = api(team, "expert").post(f"{base(team)}/queue/submit/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == field
    if message:
        assert body["message"] == message
    assert not Annotation.objects.exists()


def test_submit_rejects_a_sample_of_another_project(team, queued):
    foreign = SampleFactory(project=team.other_project)
    response = api(team, "expert").post(
        f"{base(team)}/queue/submit/", {"sample": foreign.pk, "label": "great"}, format="json"
    )
    assert response.status_code == 400 and response.json()["field"] == "sample"
    assert not Annotation.objects.exists()


def test_submit_refuses_anonymous_wrong_role_and_outsiders(team, queued):
    payload = {"sample": queued[0].pk, "label": "great"}
    url = f"{base(team)}/queue/submit/"
    assert api(team).post(url, payload, format="json").status_code in (401, 403)
    assert api(team, "product_manager").post(url, payload, format="json").status_code == 403
    assert api(team, team.outsider).post(url, payload, format="json").status_code == 404
    assert not Annotation.objects.exists()


@pytest.fixture
def labelled(team, queued):
    great, other = team.classes
    annotation_submit(
        project=team.project, user=team.users["expert"], sample=queued[0], label=great
    )
    annotation_submit(
        project=team.project, user=team.users["expert"], sample=queued[1], label=other
    )
    annotation_submit(project=team.project, user=team.users["owner"], sample=queued[0], label=other)
    annotation_submit(project=team.project, user=team.users["owner"], sample=queued[2], skip=True)
    return queued


def test_labels_list_every_row_and_filter(team, labelled):
    client = api(team, "product_manager")  # reading labels needs only VIEW
    url = f"{base(team)}/labels/"
    rows = client.get(url).json()["results"]
    assert [(r["annotator"], r["label_name"], r["kind"]) for r in rows] == [
        ("expert", "great", "label"),
        ("expert", "other", "label"),
        ("owner", "other", "label"),
        ("owner", None, "skip"),
    ]
    assert len(client.get(url, {"annotator": "owner"}).json()["results"]) == 2
    expert_id = team.users["expert"].pk
    assert len(client.get(url, {"annotator": expert_id}).json()["results"]) == 2
    assert len(client.get(url, {"label": "other"}).json()["results"]) == 2
    assert len(client.get(url, {"label": team.classes[0].pk}).json()["results"]) == 1
    assert len(client.get(url, {"sample": labelled[0].pk}).json()["results"]) == 2
    assert len(client.get(url, {"kind": "skip"}).json()["results"]) == 1


def test_labels_paginate_with_a_cursor(team, labelled):
    client = api(team, "expert")
    first = client.get(f"{base(team)}/labels/", {"page_size": 3}).json()
    assert len(first["results"]) == 3 and "cursor=" in first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None


def test_labels_reject_bad_filters_naming_them(team, labelled):
    client = api(team, "expert")
    response = client.get(f"{base(team)}/labels/", {"label": "refunds"})
    assert response.status_code == 400
    assert response.json()["field"] == "label"
    assert "Unknown label 'refunds'" in response.json()["message"]
    response = client.get(f"{base(team)}/labels/", {"sample": "x"})
    assert response.status_code == 400 and response.json()["field"] == "sample"
    response = client.get(f"{base(team)}/labels/", {"kind": "maybe"})
    assert response.status_code == 400 and response.json()["field"] == "kind"


def test_labels_are_hidden_from_anonymous_and_outsiders(team, labelled):
    assert api(team).get(f"{base(team)}/labels/").status_code in (401, 403)
    assert api(team, team.outsider).get(f"{base(team)}/labels/").status_code == 404


def test_queue_lists_open_items_highest_priority_first(team, queued):
    client = api(team, "data_scientist")
    rows = client.get(f"{base(team)}/queue/").json()["results"]
    assert [r["sample"] for r in rows] == [queued[1].pk, queued[2].pk, queued[0].pk]
    assert rows[0]["reason"] == "margin 5" and rows[0]["priority"] == 5
    annotation_submit(
        project=team.project, user=team.users["expert"], sample=queued[1], label="great"
    )
    assert len(client.get(f"{base(team)}/queue/").json()["results"]) == 2
    done = client.get(f"{base(team)}/queue/", {"state": "done"}).json()["results"]
    assert [r["sample"] for r in done] == [queued[1].pk]
    response = client.get(f"{base(team)}/queue/", {"state": "stuck"})
    assert response.status_code == 400 and response.json()["field"] == "state"
    assert api(team, team.outsider).get(f"{base(team)}/queue/").status_code == 404


def test_a_data_scientist_reprioritises_an_item(team, queued):
    item = QueueItem.objects.get(sample=queued[0])
    response = api(team, "data_scientist").patch(
        f"{base(team)}/queue/{item.pk}/", {"priority": 9, "reason": "hard case"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["priority"] == 9 and response.json()["reason"] == "hard case"
    item.refresh_from_db()
    assert (item.priority, item.reason) == (9, "hard case")
    assert AuditEvent.objects.filter(action="queue_item.update").count() == 1
    # and it is handed out first now
    next_sample = api(team, "expert").post(f"{base(team)}/queue/next/").json()["sample"]["id"]
    assert next_sample == queued[0].pk


def test_reprioritising_refuses_experts_outsiders_and_bad_input(team, queued):
    item = QueueItem.objects.get(sample=queued[0])
    url = f"{base(team)}/queue/{item.pk}/"
    assert api(team, "expert").patch(url, {"priority": 9}, format="json").status_code == 403
    assert api(team, team.outsider).patch(url, {"priority": 9}, format="json").status_code == 404
    client = api(team, "owner")
    response = client.patch(url, {"priority": "high"}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "priority"
    response = client.patch(url, {}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "priority"
    annotation_submit(
        project=team.project, user=team.users["expert"], sample=queued[0], label="great"
    )
    response = client.patch(url, {"priority": 9}, format="json")
    assert response.status_code == 400 and "only open or held items" in response.json()["message"]
    item.refresh_from_db()
    assert item.priority == 1
    assert not AuditEvent.objects.filter(action="queue_item.update").exists()


def token_client(user):
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def rendered(data):
    """What the API's JSON renderer makes of ``data``."""
    return json.loads(JSONRenderer().render(data))


def test_next_and_submit_answer_exactly_what_the_serializers_say(team, queued):
    # The hot path builds its answers without the serializers' per-request
    # setup; the contract (and the OpenAPI schema) stays theirs.
    client = token_client(team.users["expert"])
    body = client.post(f"{base(team)}/queue/next/", {}, format="json").json()
    lease = Lease.objects.select_related("item__sample").get()
    assert body == rendered(NextSerializer(lease).data)
    response = client.post(
        f"{base(team)}/queue/submit/",
        {"sample": queued[1].pk, "label": "other", "seconds": 2},
        format="json",
    )
    annotation = Annotation.objects.select_related("sample", "annotator", "label").get()
    assert response.json() == rendered(AnnotationSerializer(annotation).data)
    # A skip, and a body only the serializer accepts (a numeric string).
    response = client.post(
        f"{base(team)}/queue/submit/", {"sample": str(queued[2].pk), "skip": True}, format="json"
    )
    skip = Annotation.objects.select_related("sample", "annotator", "label").latest("id")
    assert response.status_code == 201
    assert response.json() == rendered(AnnotationSerializer(skip).data)


def test_a_token_is_checked_as_drf_checks_it(team, queued):
    url = f"{base(team)}/queue/next/"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = client.post(url)
    # 403 rather than 401 because session authentication comes first (DRF's rule).
    assert response.status_code == 403 and response.json()["message"] == "Invalid token."
    inactive = team.users["owner"]
    inactive.is_active = False
    inactive.save()
    response = token_client(inactive).post(url)
    assert response.status_code == 403
    assert response.json()["message"] == "User inactive or deleted."
    assert token_client(team.outsider).post(url).status_code == 404
    response = token_client(team.users["product_manager"]).post(url)
    assert response.status_code == 403 and "may not label" in response.json()["message"]
    # The membership read with the token is the URL's project's, not another's.
    other = f"/api/v1/projects/{team.other_project.pk}/queue/next/"
    assert token_client(team.users["expert"]).post(other).status_code == 404
    assert token_client(team.outsider).post(other).status_code == 204
    assert not Lease.objects.exists()


def test_a_removed_member_is_refused_at_once(team, queued):
    client = token_client(team.users["expert"])
    assert client.post(f"{base(team)}/queue/next/").status_code == 200
    Membership.objects.filter(user=team.users["expert"]).delete()
    assert client.post(f"{base(team)}/queue/next/").status_code == 404


@pytest.mark.skipif(connection.vendor != "postgresql", reason="counts PostgreSQL statements")
def test_next_and_submit_take_one_and_four_statements_after_the_token(team, queued):
    client = token_client(team.users["expert"])

    def statements(post):
        with CaptureQueriesContext(connection) as queries:
            response = post()
        skip = ("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN", "COMMIT", "SELECT 1")
        return response, [q["sql"] for q in queries if not q["sql"].startswith(skip)]

    response, sql = statements(lambda: client.post(f"{base(team)}/queue/next/"))
    assert response.status_code == 200
    assert len(sql) == 2, sql  # token + membership, then next
    sample = response.json()["sample"]["id"]
    payload = {"sample": sample, "label": "great"}
    response, sql = statements(
        lambda: client.post(f"{base(team)}/queue/submit/", payload, format="json")
    )
    assert response.status_code == 201
    assert len(sql) == 4, sql  # token + membership, lock, leases + rows, writes


def test_plain_token_requests_and_drf_give_the_same_answers(team, queued):
    # Token requests with plain bodies skip DRF's machinery; a forced login
    # goes through DRF. Same bytes, same headers that matter.
    fast = token_client(team.users["expert"])
    drf = api(team, "owner")
    a = fast.post(f"{base(team)}/queue/next/", {}, format="json")
    b = drf.post(f"{base(team)}/queue/next/", {}, format="json")
    assert (a.status_code, b.status_code) == (200, 200)
    assert a["Content-Type"] == b["Content-Type"] == "application/json"
    assert (a["Vary"], a["Allow"]) == (b["Vary"], b["Allow"])
    lease_a, lease_b = (
        Lease.objects.get(pk=a.json()["lease"]),
        Lease.objects.get(pk=b.json()["lease"]),
    )
    assert a.content == JSONRenderer().render(NextSerializer(lease_a).data)
    assert b.content == JSONRenderer().render(NextSerializer(lease_b).data)
    for client, body in ((fast, a.json()), (drf, b.json())):
        response = client.post(
            f"{base(team)}/queue/submit/",
            {"sample": body["sample"]["id"], "label": "great", "seconds": 1},
            format="json",
        )
        annotation = Annotation.objects.get(pk=response.json()["id"])
        assert response.status_code == 201
        assert response.content == JSONRenderer().render(AnnotationSerializer(annotation).data)
    assert fast.post(f"{base(team)}/queue/next/", {}, format="json").status_code == 200
    response = fast.post(f"{base(team)}/queue/next/", {}, format="json")
    assert response.status_code == 200  # the same lease again
    assert Lease.objects.filter(user=team.users["expert"]).count() == 1


def test_token_requests_with_bad_input_get_drfs_errors(team, queued):
    client = token_client(team.users["expert"])
    url = f"{base(team)}/queue/submit/"
    response = client.post(url, {"sample": queued[0].pk, "label": "refunds"}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "label"
    assert "Unknown label 'refunds'" in response.json()["message"]
    response = client.post(url, {"sample": 10**9, "label": "great"}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "sample"
    response = client.post(url, "{not json", content_type="application/json")
    assert response.status_code == 400
    response = client.post(f"{base(team)}/queue/next/", {"exclude": [0]}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "exclude.0"
    assert not Annotation.objects.exists()
    assert not Lease.objects.exists()


def test_session_requests_still_need_the_csrf_token(team, queued):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(team.users["expert"])
    response = client.post(f"{base(team)}/queue/next/", {}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["message"]
    # A token beside the session cookie: DRF takes the session (and its CSRF check).
    token, _ = Token.objects.get_or_create(user=team.users["owner"])
    response = client.post(
        f"{base(team)}/queue/next/", {}, format="json", HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    assert response.status_code == 403 and "CSRF" in response.json()["message"]
    assert not Lease.objects.exists()


def test_plain_token_requests_do_not_go_through_drf(team, queued):
    from unittest import mock

    from labelling.api.queue import QueueViewSet

    client = token_client(team.users["expert"])
    drf_was_used = AssertionError("the DRF action ran")
    with (
        mock.patch.object(QueueViewSet, "next", side_effect=drf_was_used),
        mock.patch.object(QueueViewSet, "submit", side_effect=drf_was_used),
    ):
        body = client.post(f"{base(team)}/queue/next/", {}, format="json").json()
        payload = {"sample": body["sample"]["id"], "label": "great"}
        response = client.post(f"{base(team)}/queue/submit/", payload, format="json")
    assert response.status_code == 201


def submit_next(client, team, payload):
    return client.post(f"{base(team)}/queue/submit-next/", payload, format="json")


def test_submit_next_records_the_label_and_hands_out_the_following_sample(team, queued):
    client = token_client(team.users["expert"])
    first = client.post(f"{base(team)}/queue/next/", {}, format="json").json()
    assert first["sample"]["id"] == queued[1].pk
    response = submit_next(client, team, {"sample": queued[1].pk, "label": "great", "seconds": 3})
    assert response.status_code == 201
    body = response.json()
    assert body["annotation"]["label_name"] == "great" and body["annotation"]["seconds"] == 3
    assert body["annotation"]["sample"] == queued[1].pk
    assert body["next"]["sample"]["id"] == queued[2].pk  # priority 3 after 5
    assert QueueItem.objects.get(sample=queued[1]).state == "done"
    lease = Lease.objects.get()
    assert lease.pk == body["next"]["lease"] and lease.item.sample_id == queued[2].pk
    assert lease.item.claims == 1
    # A skip, then the last one, then nothing is left: next is null.
    body = submit_next(client, team, {"sample": queued[2].pk, "skip": True}).json()
    assert body["annotation"]["kind"] == "skip" and body["next"]["sample"]["id"] == queued[0].pk
    body = submit_next(client, team, {"sample": queued[0].pk, "label": "other"}).json()
    assert body["annotation"]["label_name"] == "other" and body["next"] is None
    assert not Lease.objects.exists()
    assert Annotation.objects.filter(annotator=team.users["expert"]).count() == 3
    assert AuditEvent.objects.filter(action="annotation.create").count() == 3


def test_submit_next_keeps_next_rules_held_lease_exclude_and_overlap(team, queued):
    client = token_client(team.users["expert"])
    top = client.post(f"{base(team)}/queue/next/", {}, format="json").json()
    second = client.post(
        f"{base(team)}/queue/next/", {"exclude": [top["item"]["id"]]}, format="json"
    ).json()  # the page's prefetch: two leases
    # Answering the top one hands back the lease still held, not a third sample.
    body = submit_next(client, team, {"sample": queued[1].pk, "label": "great"}).json()
    assert body["next"]["lease"] == second["lease"]
    # Excluding it (it is on screen) takes the remaining sample instead.
    body = submit_next(
        client,
        team,
        {"sample": queued[0].pk, "label": "great", "exclude": [second["item"]["id"]]},
    ).json()
    assert body["annotation"]["sample"] == queued[0].pk and body["next"] is None
    # Another annotator gets nothing held by someone (overlap 1).
    other = token_client(team.users["data_scientist"])
    body = submit_next(other, team, {"sample": queued[1].pk, "label": "other"}).json()
    assert body["next"] is None
    assert Lease.objects.get().pk == second["lease"]


def test_submit_next_answers_exactly_what_the_serializers_say_on_both_paths(team, queued):
    # Token requests with plain bodies skip DRF; a forced login, and a body
    # only the serializer accepts, go through it. Same bytes either way.
    fast, drf = token_client(team.users["expert"]), api(team, "owner")
    payloads = [
        (fast, {"sample": queued[1].pk, "label": "great", "seconds": 1}),
        (drf, {"sample": queued[2].pk, "label": "other", "seconds": 1}),
        (fast, {"sample": str(queued[0].pk), "skip": True, "exclude": [10**6]}),  # a string id
        (drf, {"sample": queued[0].pk, "skip": True}),
    ]
    nexts = []
    for client, payload in payloads:
        response = submit_next(client, team, payload)
        assert response.status_code == 201
        assert response["Content-Type"] == "application/json"
        assert (response["Vary"], response["Allow"]) == ("Accept", "POST, OPTIONS")
        body = response.json()
        annotation = Annotation.objects.select_related("sample", "annotator", "label").get(
            pk=body["annotation"]["id"]
        )
        lease = (
            None
            if body["next"] is None
            else Lease.objects.select_related("item__sample").get(pk=body["next"]["lease"])
        )
        expected = SubmitNextResultSerializer({"annotation": annotation, "next": lease}).data
        assert response.content == JSONRenderer().render(expected)
        nexts.append(body["next"])
    # Both shapes of the answer were compared: a next sample, and none left.
    assert nexts[0] is not None and nexts[-1] is None


@pytest.mark.parametrize("client_kind", ["token", "drf"])
@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"label": "refunds"}, "label", "Unknown label 'refunds'"),
        ({"label": "great", "sample": 10**9}, "sample", "No sample with id 1000000000"),
        ({"label": "great", "skip": True}, "label", "Give a label or skip, not both."),
        ({"label": "great", "exclude": [0]}, "exclude.0", None),
        ({"label": "great", "exclude": "x"}, "exclude", None),
    ],
)
def test_submit_next_with_bad_input_writes_nothing_and_hands_out_nothing(
    team, queued, client_kind, payload, field, message
):
    client = token_client(team.users["expert"]) if client_kind == "token" else api(team, "expert")
    held = client.post(f"{base(team)}/queue/next/", {}, format="json").json()
    before = list(QueueItem.objects.order_by("id").values_list("claims", "labels_done", "state"))
    response = submit_next(client, team, {"sample": queued[1].pk, **payload})
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == field
    if message:
        assert body["message"].startswith(message)
    assert not Annotation.objects.exists()
    assert list(Lease.objects.values_list("pk", flat=True)) == [held["lease"]]
    after = list(QueueItem.objects.order_by("id").values_list("claims", "labels_done", "state"))
    assert after == before
    assert not AuditEvent.objects.filter(action="annotation.create").exists()


def test_submit_next_refuses_anonymous_wrong_role_and_outsiders(team, queued):
    payload = {"sample": queued[0].pk, "label": "great"}
    assert submit_next(api(team), team, payload).status_code in (401, 403)
    response = submit_next(token_client(team.users["product_manager"]), team, payload)
    assert response.status_code == 403 and "may not label" in response.json()["message"]
    assert submit_next(api(team, team.outsider), team, payload).status_code == 404
    assert submit_next(token_client(team.outsider), team, payload).status_code == 404
    assert not Annotation.objects.exists() and not Lease.objects.exists()


def test_submit_next_plain_token_requests_do_not_go_through_drf(team, queued):
    from unittest import mock

    from labelling.api.queue import QueueViewSet

    client = token_client(team.users["expert"])
    drf_was_used = AssertionError("the DRF action ran")
    with mock.patch.object(QueueViewSet, "submit_next", side_effect=drf_was_used):
        payload = {"sample": queued[1].pk, "label": "great", "exclude": [], "seconds": 2.5}
        response = submit_next(client, team, payload)
    assert response.status_code == 201 and response.json()["next"]["sample"]["id"] == queued[2].pk


@pytest.mark.skipif(connection.vendor != "postgresql", reason="counts PostgreSQL statements")
def test_submit_next_takes_five_statements_after_the_token(team, queued):
    client = token_client(team.users["expert"])
    first = client.post(f"{base(team)}/queue/next/").json()
    payload = {"sample": first["sample"]["id"], "label": "great"}
    with CaptureQueriesContext(connection) as queries:
        response = submit_next(client, team, payload)
    assert response.status_code == 201 and response.json()["next"] is not None
    sql = [q["sql"] for q in queries]
    skip = ("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN", "COMMIT", "SELECT 1")
    work = [q for q in sql if not q.startswith(skip)]
    # token + membership, lock, leases + rows, writes, next
    assert len(work) == 5, work
