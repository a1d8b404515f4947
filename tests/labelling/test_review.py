"""Adjudication (service) and the review page (views)."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labelling.models import Adjudication, Annotation, Lease, QueueItem, Sample
from labelling.services.consensus import consensus_refresh
from labelling.services.queue import queue_add
from labelling.services.review import sample_adjudicate
from leanml_site.models import AuditEvent
from tests.factories import LabelClassFactory, SampleFactory

pytestmark = pytest.mark.django_db
C = Sample.Consensus


def label(sample, user, label_class=None, seconds=5.0):
    """An annotator's label, as the labelling service would record it."""
    Annotation.objects.create(
        project=sample.project,
        sample=sample,
        annotator=user,
        kind=Annotation.Kind.LABEL if label_class else Annotation.Kind.SKIP,
        label=label_class,
        seconds=seconds,
    )
    consensus_refresh(project=sample.project, sample_ids=[sample.pk])
    sample.refresh_from_db()
    return sample


@pytest.fixture
def disputed(team):
    """Overlap 2: the expert says great, the data scientist other — a tie."""
    team.project.overlap = 2
    team.project.save()
    great, other = team.classes
    sample = SampleFactory(project=team.project, data={"text": "Tasty, but arrived late."})
    label(sample, team.users["expert"], great)
    label(sample, team.users["data_scientist"], other)
    assert sample.consensus_state == C.DISPUTED
    return sample


def majority_sample(team, text="Fine."):
    great, other = team.classes
    team.project.overlap = 3
    team.project.save()
    sample = SampleFactory(project=team.project, data={"text": text})
    label(sample, team.users["expert"], great)
    label(sample, team.users["data_scientist"], great)
    label(sample, team.users["owner"], other)
    assert sample.consensus_state == C.MAJORITY
    return sample


def adjudicate_url(team, sample):
    return reverse("labelling:adjudicate", args=[team.project.pk, sample.pk])


def review_url(team):
    return reverse("labelling:review", args=[team.project.pk])


# --- service ---------------------------------------------------------------------------------


def test_adjudication_settles_a_tie_and_is_audited(team, disputed):
    great, _ = team.classes
    owner = team.users["owner"]
    adjudication = sample_adjudicate(sample=disputed, by=owner, label=great, note=" late ≠ bad ")
    disputed.refresh_from_db()
    assert (disputed.consensus_state, disputed.consensus_label) == (C.ADJUDICATED, great)
    assert adjudication.note == "late ≠ bad"
    assert adjudication.sample.consensus_state == C.ADJUDICATED
    event = AuditEvent.objects.get(action="consensus.adjudicate")
    assert event.actor == owner
    assert event.target_id == str(disputed.pk)
    assert event.before == {"state": "disputed", "label": None}
    assert event.after == {
        "state": "adjudicated",
        "label": "great",
        "gold": False,
        "note": "late ≠ bad",
        "own_label": None,
    }


def test_adjudications_append_and_the_latest_wins(team, disputed):
    great, other = team.classes
    owner, expert = team.users["owner"], team.users["expert"]
    sample_adjudicate(sample=disputed, by=owner, label=great)
    sample_adjudicate(sample=disputed, by=expert, label=other, gold=True)
    disputed.refresh_from_db()
    assert Adjudication.objects.filter(sample=disputed).count() == 2
    assert (disputed.consensus_state, disputed.consensus_label) == (C.GOLD, other)
    second = AuditEvent.objects.filter(action="consensus.adjudicate").order_by("id").last()
    assert second.before == {"state": "adjudicated", "label": "great"}
    assert second.after["state"] == "gold"
    # The expert had labelled it great themselves: allowed, and recorded.
    assert second.after["own_label"] == "great"


def test_adjudication_outlives_later_labels(team, disputed):
    _, other = team.classes
    sample_adjudicate(sample=disputed, by=team.users["owner"], label=other)
    label(disputed, team.users["owner"], team.classes[0])
    assert (disputed.consensus_state, disputed.consensus_label) == (C.ADJUDICATED, other)


def test_adjudication_closes_the_open_queue_item(team, disputed):
    queue_add(project=team.project, sample_ids=[disputed.pk])
    item = QueueItem.objects.get(sample=disputed)
    Lease.objects.create(
        item=item,
        project=team.project,
        user=team.users["owner"],
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    sample_adjudicate(sample=disputed, by=team.users["owner"], label=team.classes[0])
    item.refresh_from_db()
    assert item.state == QueueItem.State.DONE
    assert not Lease.objects.filter(item=item).exists()


def test_service_rejects_a_label_of_another_project(team, disputed):
    foreign = LabelClassFactory(project=team.other_project, name="secret")
    with pytest.raises(ValidationError) as caught:
        sample_adjudicate(sample=disputed, by=team.users["owner"], label=foreign)
    message = caught.value.message_dict["label"][0]
    assert message == f"Label {foreign.pk} is not one of this project's classes (great, other)."
    assert "secret" not in message
    assert not Adjudication.objects.exists()
    assert not AuditEvent.objects.filter(action="consensus.adjudicate").exists()


# --- review list -------------------------------------------------------------------------------


def test_review_lists_disputed_before_majority_with_each_label(team, disputed):
    majority = majority_sample(team, text="Majority text")
    response = team.client("expert").get(review_url(team))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index(f'id="review-{disputed.pk}"') < html.index(f'id="review-{majority.pk}"')
    assert "Tasty, but arrived late." in html
    assert "Disputed (tie): 1" in html and "Majority (some disagree): 1" in html
    assert "majority: <strong>great</strong>" in html
    # Each annotator's current label, and adjudication buttons for every class.
    assert '<span class="who">data_scientist</span>' in html
    assert html.count(f'action="{adjudicate_url(team, disputed)}"') == 1
    for label_class in team.classes:
        assert f'name="label" value="{label_class.pk}"' in html
    assert "mark as gold" not in html  # owners only
    assert "You labelled this: great" in html


def test_owner_sees_the_gold_checkbox(team, disputed):
    response = team.client("owner").get(review_url(team))
    assert 'name="gold"' in response.content.decode()


def test_review_leaves_out_settled_samples(team, disputed):
    agreed = SampleFactory(project=team.project)
    label(agreed, team.users["expert"], team.classes[0])
    label(agreed, team.users["owner"], team.classes[0])
    assert agreed.consensus_state == C.AGREED
    html = team.client("expert").get(review_url(team)).content.decode()
    assert f'id="review-{agreed.pk}"' not in html
    assert f'id="review-{disputed.pk}"' in html


def test_product_manager_reads_the_list_without_buttons(team, disputed):
    response = team.client("product_manager").get(review_url(team))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="review-{disputed.pk}"' in html
    assert adjudicate_url(team, disputed) not in html
    assert "experts and owners settle the samples" in html


def test_review_hides_other_projects_and_needs_login(team, disputed):
    assert team.client(team.outsider).get(review_url(team)).status_code == 404
    response = Client().get(review_url(team))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_sample_text_is_escaped(team, disputed):
    evil = SampleFactory(
        project=team.project, data={"text": '<script>alert(1)</script><img src=x onerror="x()">'}
    )
    label(evil, team.users["expert"], team.classes[0])
    label(evil, team.users["data_scientist"], team.classes[1])
    html = team.client("expert").get(review_url(team)).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_review_is_keyset_paginated_disputed_first(team):
    team.project.overlap = 2
    team.project.save()
    great, other = team.classes
    disputed = []
    for n in range(27):
        sample = SampleFactory(project=team.project, data={"text": f"tie {n}"})
        label(sample, team.users["expert"], great)
        label(sample, team.users["data_scientist"], other)
        disputed.append(sample)
    team.project.overlap = 3
    team.project.save()
    majority = SampleFactory(project=team.project, data={"text": "a majority"})
    for role, choice in (("expert", great), ("data_scientist", great), ("owner", other)):
        label(majority, team.users[role], choice)
    assert majority.consensus_state == C.MAJORITY

    client = team.client("expert")
    first = client.get(review_url(team))
    ids = [s.pk for s in first.context["page"].samples]
    assert ids == [s.pk for s in disputed[:25]]
    cursor = first.context["page"].next_cursor
    assert cursor == f"disputed:{disputed[24].pk}"
    second = client.get(review_url(team), {"after": cursor})
    assert [s.pk for s in second.context["page"].samples] == [
        disputed[25].pk,
        disputed[26].pk,
        majority.pk,
    ]
    assert second.context["page"].next_cursor is None
    # A mangled cursor starts again from the top instead of failing.
    bad = client.get(review_url(team), {"after": "bogus:1"})
    assert [s.pk for s in bad.context["page"].samples][0] == disputed[0].pk


def test_review_page_queries_do_not_grow_with_rows(team, django_assert_max_num_queries):
    team.project.overlap = 2
    team.project.save()
    for _ in range(20):
        sample = SampleFactory(project=team.project)
        label(sample, team.users["expert"], team.classes[0])
        label(sample, team.users["data_scientist"], team.classes[1])
    client = team.client("owner")
    with django_assert_max_num_queries(12):
        response = client.get(review_url(team))
    assert len(response.context["rows"]) == 20


# --- adjudicating from the page ---------------------------------------------------------------


def test_htmx_adjudication_returns_the_settled_row(team, disputed):
    great, _ = team.classes
    response = team.client("expert").post(
        adjudicate_url(team, disputed),
        {"label": great.pk, "note": "delivery is not the product"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert html.lstrip().startswith('<article class="card review-row settled"')
    assert "Settled as <strong>great</strong>" in html
    assert "by you" in html
    assert "You labelled this: great" in html  # settling your own dispute shows
    assert "delivery is not the product" in html
    # The counts above the list are swapped out of band.
    assert '<div class="review-counts" id="review-counts" hx-swap-oob="true">' in html
    assert "Disputed (tie): 0" in html
    disputed.refresh_from_db()
    assert (disputed.consensus_state, disputed.consensus_label) == (C.ADJUDICATED, great)
    assert Adjudication.objects.get(sample=disputed).by == team.users["expert"]


def test_a_note_over_the_limit_is_refused_at_the_note_not_cut(team, disputed):
    great, _ = team.classes
    note = "n" * 2500
    response = team.client("expert").post(
        adjudicate_url(team, disputed), {"label": great.pk, "note": note}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    note_input = re.search(r'<input type="text" name="note"[^>]*>', html)[0]
    assert f'value="{note}"' in note_input and 'aria-invalid="true"' in note_input
    assert 'maxlength="2000"' in note_input
    assert (
        f'<p class="error" role="alert" id="review-note-error-{disputed.pk}">The note is 2,500 '
        "characters long; keep it to 2,000 characters at most.</p>" in html
    )
    assert f'aria-describedby="review-note-error-{disputed.pk}"' in note_input
    assert not Adjudication.objects.exists()
    disputed.refresh_from_db()
    assert disputed.consensus_state == C.DISPUTED
    # the API refuses the same note
    api = team.client("expert").post(
        f"/api/v1/projects/{team.project.pk}/samples/{disputed.pk}/adjudicate/",
        {"label": great.pk, "note": note},
        content_type="application/json",
    )
    assert api.status_code == 400 and not Adjudication.objects.exists()


def test_service_refuses_a_note_over_the_limit(team, disputed):
    great, _ = team.classes
    with pytest.raises(ValidationError) as refused:
        sample_adjudicate(sample=disputed, by=team.users["owner"], label=great, note="n" * 2001)
    assert list(refused.value.error_dict) == ["note"]
    assert not Adjudication.objects.exists()
    longest = sample_adjudicate(
        sample=disputed, by=team.users["owner"], label=great, note=" " + "n" * 2000 + " "
    )
    assert longest.note == "n" * 2000


def test_plain_form_post_redirects_back_with_a_message(team, disputed):
    _, other = team.classes
    client = team.client("owner")
    response = client.post(
        adjudicate_url(team, disputed), {"label": other.pk, "gold": "on", "after": "disputed:1"}
    )
    assert response.status_code == 302
    assert response["Location"] == review_url(team) + "?after=disputed%3A1"
    disputed.refresh_from_db()
    assert (disputed.consensus_state, disputed.consensus_label) == (C.GOLD, other)
    page = client.get(review_url(team))
    assert f"Sample {disputed.external_id} settled as “other” (gold)." in page.content.decode()


def test_settling_a_sample_you_labelled_says_so(team, disputed):
    client = team.client("expert")
    client.post(adjudicate_url(team, disputed), {"label": team.classes[1].pk})
    html = unescape(client.get(review_url(team)).content.decode())
    assert (
        f"Sample {disputed.external_id} settled as “other”. You had labelled it “great” yourself."
        in html
    )


@pytest.mark.parametrize("role", ["expert", "owner"])
def test_experts_and_owners_adjudicate(team, disputed, role):
    response = team.client(role).post(adjudicate_url(team, disputed), {"label": team.classes[0].pk})
    assert response.status_code == 302
    assert Adjudication.objects.get(sample=disputed).by == team.users[role]


@pytest.mark.parametrize("role", ["product_manager", "data_scientist"])
def test_other_roles_may_not_adjudicate(team, disputed, role):
    response = team.client(role).post(adjudicate_url(team, disputed), {"label": team.classes[0].pk})
    assert response.status_code == 403
    assert not Adjudication.objects.exists()
    disputed.refresh_from_db()
    assert disputed.consensus_state == C.DISPUTED


def test_expert_may_not_mark_gold(team, disputed):
    response = team.client("expert").post(
        adjudicate_url(team, disputed), {"label": team.classes[0].pk, "gold": "1"}
    )
    assert response.status_code == 403
    assert not Adjudication.objects.exists()


def test_outsider_gets_404_and_anonymous_the_login_page(team, disputed):
    url = adjudicate_url(team, disputed)
    assert team.client(team.outsider).post(url, {"label": team.classes[0].pk}).status_code == 404
    response = Client().post(url, {"label": team.classes[0].pk})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not Adjudication.objects.exists()


def test_a_sample_of_another_project_is_404(team):
    foreign = SampleFactory(project=team.other_project)
    url = reverse("labelling:adjudicate", args=[team.project.pk, foreign.pk])
    assert team.client("owner").post(url, {"label": team.classes[0].pk}).status_code == 404


def test_it_rejects_get(team, disputed):
    assert team.client("owner").get(adjudicate_url(team, disputed)).status_code == 405


def test_label_of_another_project_is_rejected_with_a_clear_message(team, disputed):
    foreign = LabelClassFactory(project=team.other_project, name="secret")
    client = team.client("owner")
    response = client.post(adjudicate_url(team, disputed), {"label": foreign.pk}, follow=True)
    html = unescape(response.content.decode())
    expected = (
        f"Sample {disputed.external_id}: Label {foreign.pk} is not one of this project's "
        "classes (great, other)."
    )
    assert expected in html
    assert "secret" not in html
    htmx = client.post(
        adjudicate_url(team, disputed), {"label": foreign.pk}, HTTP_HX_REQUEST="true"
    )
    assert htmx.status_code == 200
    assert f"Label {foreign.pk} is not one of this project's classes" in unescape(
        htmx.content.decode()
    )
    assert not Adjudication.objects.exists()
    disputed.refresh_from_db()
    assert disputed.consensus_state == C.DISPUTED


@pytest.mark.parametrize("value", ["", "abc", "99999999"])
def test_missing_or_unknown_label_is_rejected(team, disputed, value):
    response = team.client("owner").post(
        adjudicate_url(team, disputed), {"label": value}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert not Adjudication.objects.exists()


def test_nav_links_to_review_and_review_to_agreement(team):
    html = team.client("product_manager").get(
        reverse("labelling:project_detail", args=[team.project.pk])
    )
    assert review_url(team) in html.content.decode()
    review = team.client("product_manager").get(review_url(team)).content.decode()
    assert reverse("labelling:agreement", args=[team.project.pk]) in review


def test_service_refuses_an_unknown_review_and_a_labeller_settling_a_suspected_error(
    team, disputed
):
    great = team.classes[0]
    with pytest.raises(ValidationError) as unknown:
        sample_adjudicate(sample=disputed, by=team.users["owner"], label=great, review="recheck")
    assert "Unknown review “recheck”" in unknown.value.message_dict["review"][0]
    with pytest.raises(ValidationError) as own:
        sample_adjudicate(
            sample=disputed, by=team.users["expert"], label=great, review="label_error"
        )
    assert "settled by someone else" in own.value.message_dict["review"][0]
    assert not Adjudication.objects.exists()
    # Someone who gave no label may settle it.
    sample_adjudicate(sample=disputed, by=team.users["owner"], label=great, review="label_error")
    assert Adjudication.objects.filter(by=team.users["owner"]).count() == 1
