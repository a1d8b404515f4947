"""The labelling page: cards, htmx partials, plain form posts, escaping, access."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from labelling.models import Annotation, Flag, LabelClass, Lease, QueueItem
from labelling.services.queue import queue_add, queue_next
from labelling.views.labelling import label_buttons
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(name, team, *args):
    return reverse(f"labelling:{name}", args=[team.project.pk, *args])


@pytest.fixture
def queued(team):
    samples = [
        SampleFactory(project=team.project, data={"text": f"review number {n}"}) for n in range(3)
    ]
    for priority, sample in zip([3, 2, 1], samples, strict=True):
        queue_add(
            project=team.project,
            sample_ids=[sample.pk],
            priority=priority,
            strategy="uncertainty",
            reason="The model is unsure between great and other",
            score=0.512,
        )
    return samples


def test_it_shows_the_next_sample_why_it_is_queued_and_progress(team, queued):
    response = team.client("expert").get(url("label", team))
    assert response.status_code == 200
    body = response.content.decode()
    assert "review number 0" in body
    assert "The model is unsure between great and other" in body
    assert "uncertainty" in body and "score 0.512" in body
    assert "left for you" in body
    assert 'data-keys="1"' in body and 'data-keys="2"' in body
    assert Lease.objects.get(user=team.users["expert"]).item.sample == queued[0]


def test_it_shows_guidelines_and_class_descriptions(team, queued):
    team.project.guidelines = "Label the product, not the delivery."
    team.project.save()
    LabelClass.objects.filter(pk=team.classes[0].pk).update(description="Would buy again.")
    body = team.client("expert").get(url("label", team)).content.decode()
    assert "Label the product, not the delivery." in body
    assert "Would buy again." in body


def test_it_redirects_anonymous_to_login(team, queued):
    response = Client().get(url("label", team))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    response = Client().post(url("label_submit", team), {"sample": queued[0].pk, "label": "1"})
    assert response.status_code == 302
    assert not Annotation.objects.exists()


def test_it_refuses_a_product_manager(team, queued):
    client = team.client("product_manager")
    assert client.get(url("label", team)).status_code == 403
    assert client.get(url("label_card", team)).status_code == 403
    response = client.post(
        url("label_submit", team), {"sample": queued[0].pk, "label": team.classes[0].pk}
    )
    assert response.status_code == 403
    assert not Annotation.objects.exists()
    assert not Lease.objects.exists()


def test_it_hides_the_project_from_outsiders(team, queued):
    client = team.client(team.outsider)
    assert client.get(url("label", team)).status_code == 404
    response = client.post(
        url("label_submit", team), {"sample": queued[0].pk, "label": team.classes[0].pk}
    )
    assert response.status_code == 404
    assert not Annotation.objects.exists()


def test_it_escapes_html_in_sample_text_but_keeps_line_breaks(team):
    sample = SampleFactory(
        project=team.project,
        data={
            "text": 'Nice<br />tea <script>alert("x")</script> <img src=x onerror="alert(1)">'
            "<br>end <b>bold</b>"
        },
    )
    queue_add(project=team.project, sample_ids=[sample.pk], reason="<i>why</i>")
    body = team.client("expert").get(url("label", team)).content.decode()
    assert "<script>alert" not in body
    assert "<img src=x" not in body and "<b>bold" not in body and "<i>why" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body
    assert "Nice<br>tea" in body and "<br>end &lt;b&gt;bold&lt;/b&gt;" in body
    assert "&lt;i&gt;why&lt;/i&gt;" in body


def test_a_plain_form_post_saves_and_redirects_back(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    response = client.post(
        url("label_submit", team),
        {"sample": queued[0].pk, "label": team.classes[1].pk, "seconds": ""},
    )
    assert response.status_code == 302
    assert response["Location"] == url("label", team)
    annotation = Annotation.objects.get()
    assert (annotation.sample, annotation.label, annotation.kind) == (
        queued[0],
        team.classes[1],
        "label",
    )
    assert annotation.seconds is not None and annotation.seconds >= 0
    assert QueueItem.objects.get(sample=queued[0]).state == "done"
    assert "review number 1" in client.get(url("label", team)).content.decode()


def test_a_plain_skip_post_records_a_skip(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    response = client.post(url("label_submit", team), {"sample": queued[0].pk, "skip": "1"})
    assert response.status_code == 302
    annotation = Annotation.objects.get()
    assert annotation.kind == "skip" and annotation.label is None
    assert QueueItem.objects.get(sample=queued[0]).claims == 0


def test_an_htmx_post_answers_with_the_next_card_and_progress(team, queued):
    client = team.client("expert")
    user = team.users["expert"]
    client.get(url("label", team))
    prefetched = client.get(
        url("label_card", team),
        {"exclude": QueueItem.objects.get(sample=queued[0]).pk},
        **HTMX,
    )
    assert "review number 1" in prefetched.content.decode()
    assert Lease.objects.filter(user=user).count() == 2
    response = client.post(
        url("label_submit", team),
        {
            "sample": queued[0].pk,
            "label": team.classes[0].pk,
            "seconds": "2.25",
            "want_card": "1",
            "exclude": [QueueItem.objects.get(sample=queued[1]).pk],
        },
        **HTMX,
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "review number 2" in body
    assert 'id="label-progress"' in body and "<html" not in body
    assert re.search(r'<div class="stat">1</div><div class="stat-label">labelled today', body)
    assert Annotation.objects.get().seconds == 2.25
    assert Lease.objects.filter(user=user).count() == 2


def test_an_htmx_post_without_want_card_answers_progress_only(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    response = client.post(
        url("label_submit", team),
        {"sample": queued[0].pk, "label": team.classes[0].pk, "seconds": "1"},
        **HTMX,
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="label-progress"' in body and "label-card" not in body
    assert Lease.objects.filter(user=team.users["expert"]).count() == 0


def test_it_refuses_a_bad_label_naming_it(team, queued):
    client = team.client("expert")
    response = client.post(
        url("label_submit", team), {"sample": queued[0].pk, "label": "refunds"}, **HTMX
    )
    assert response.status_code == 400
    assert "Unknown label 'refunds'" in response.content.decode()
    response = client.post(
        url("label_submit", team), {"sample": queued[0].pk, "label": "refunds"}, follow=True
    )
    assert "Not saved: Unknown label &#x27;refunds&#x27;" in response.content.decode()
    response = client.post(
        url("label_submit", team),
        {"sample": queued[0].pk, "label": team.classes[0].pk, "seconds": "-3"},
        **HTMX,
    )
    assert response.status_code == 400 and "seconds" in response.content.decode()
    assert not Annotation.objects.exists()


def test_it_answers_404_for_a_sample_of_another_project(team, queued):
    foreign = SampleFactory(project=team.other_project)
    response = team.client("expert").post(
        url("label_submit", team), {"sample": foreign.pk, "label": team.classes[0].pk}
    )
    assert response.status_code == 404
    response = team.client("expert").post(url("label_submit", team), {"sample": "x", "label": "1"})
    assert response.status_code == 404
    assert not Annotation.objects.exists()


def test_an_empty_queue_says_so_with_progress(team):
    response = team.client("expert").get(url("label", team))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Nothing left in the queue" in body and "labelled today" in body
    assert (
        'data-empty="1"'
        in team.client("expert").get(url("label_card", team), **HTMX).content.decode()
    )


def test_undo_shows_my_last_sample_again_and_relabelling_appends(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    client.post(url("label_submit", team), {"sample": queued[0].pk, "label": team.classes[0].pk})
    body = client.get(url("label", team), {"undo": "1"}).content.decode()
    assert "review number 0" in body and "your last answer: great" in body
    partial = client.get(url("label_card", team), {"undo": "1"}, **HTMX).content.decode()
    assert "review number 0" in partial and 'data-relabel="1"' in partial
    client.post(url("label_submit", team), {"sample": queued[0].pk, "label": team.classes[1].pk})
    rows = Annotation.objects.filter(sample=queued[0]).order_by("id")
    assert [a.label.name for a in rows] == ["great", "other"]
    item = QueueItem.objects.get(sample=queued[0])
    assert (item.labels_done, item.claims) == (1, 1)


def test_undo_never_shows_someone_elses_label(team, queued):
    other = team.client("data_scientist")
    other.get(url("label", team))
    other.post(url("label_submit", team), {"sample": queued[0].pk, "label": team.classes[0].pk})
    client = team.client("expert")
    assert client.get(url("label_card", team), {"undo": "1"}, **HTMX).status_code == 204
    body = client.get(url("label", team), {"undo": "1"}, follow=True).content.decode()
    assert "Nothing to undo yet" in body
    assert "your last answer" not in body


UNDO_LINK = re.compile(r'<a class="label-undo" href="[^"]*"( hidden)?>')


def test_undo_is_offered_only_once_there_is_an_answer_to_undo(team, queued):
    client = team.client("expert")
    assert UNDO_LINK.findall(client.get(url("label", team)).content.decode()) == [" hidden"]
    partial = client.get(url("label_card", team), {"exclude": queued[0].pk}, **HTMX)
    assert UNDO_LINK.findall(partial.content.decode()) == [" hidden"]
    client.post(url("label_submit", team), {"sample": queued[0].pk, "skip": "1"})
    assert UNDO_LINK.findall(client.get(url("label", team)).content.decode()) == [""]
    # The submit round trip's next card offers it too.
    answer = {"sample": queued[1].pk, "skip": "1", "want_card": "1"}
    partial = client.post(url("label_submit", team), answer, **HTMX)
    assert f'data-sample="{queued[2].pk}"' in partial.content.decode()
    assert UNDO_LINK.findall(partial.content.decode()) == [""]


def flag_from_label_page(client, team, sample, **headers):
    return client.post(
        reverse("labelling:sample_flag", args=[team.project.pk, sample.pk]),
        {
            "kind": "duplicate",
            "duplicate_of": "not-an-id",
            "note": "same <b>text</b>",
            "from": "label",
            "next": f"{url('label', team)}?after_flag={sample.pk}",
        },
        **headers,
    )


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_a_refused_flag_stays_on_the_sample_with_the_form_filled_and_why(team, queued, headers):
    client = team.client("expert")
    client.get(url("label", team))

    response = flag_from_label_page(client, team, queued[0], **headers)

    assert response.status_code == 400
    body = response.content.decode()
    assert ("<html" in body) == (not headers)
    assert f'data-sample="{queued[0].pk}"' in body and "review number 0" in body
    assert '<details class="label-flag" open>' in body
    assert re.search(r'<input type="radio" name="kind" value="duplicate"[^>]* checked>', body)
    assert len(re.findall(r'type="radio"[^>]* checked', body)) == 1
    duplicate_input = re.search(r'<input type="text" name="duplicate_of"[^>]*>', body)[0]
    assert 'value="not-an-id"' in duplicate_input and 'aria-invalid="true"' in duplicate_input
    assert 'value="same &lt;b&gt;text&lt;/b&gt;"' in body  # kept, escaped
    error = re.search(r'<p class="error flag-error" role="alert" id="([^"]+)">([^<]*)</p>', body)
    assert f'aria-describedby="{error[1]}"' in duplicate_input
    assert error[2] == "Not flagged: No sample with id &#x27;not-an-id&#x27; in this project."
    # the error sits right after the "Duplicate of" field, not elsewhere on the card
    assert body.index(duplicate_input) < body.index(error[0]) < body.index('name="note"')
    assert not Flag.objects.exists() and not Annotation.objects.exists()
    assert Lease.objects.filter(item__sample=queued[0], user=team.users["expert"]).exists()


def test_a_flag_note_longer_than_the_limit_is_refused_at_the_note(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    response = client.post(
        reverse("labelling:sample_flag", args=[team.project.pk, queued[0].pk]),
        {"kind": "corrupt", "note": "n" * 2001, "from": "label"},
        **HTMX,
    )
    assert response.status_code == 400
    body = response.content.decode()
    note_input = re.search(r'<input type="text" name="note"[^>]*>', body)[0]
    assert 'aria-invalid="true"' in note_input and 'maxlength="2000"' in note_input
    assert "The note is 2,001 characters long; keep it to 2,000 characters at most." in body
    assert not Flag.objects.exists()


def test_after_a_flag_the_annotator_moves_on(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    # without a flag nothing happens: the same sample comes back
    body = client.get(url("label", team), {"after_flag": queued[0].pk}).content.decode()
    assert "review number 0" in body
    Flag.objects.create(sample=queued[0], kind="corrupt", created_by=team.users["expert"])
    body = client.get(url("label", team), {"after_flag": queued[0].pk}).content.decode()
    assert "review number 1" in body
    annotation = Annotation.objects.get()
    assert (annotation.sample, annotation.kind) == (queued[0], "skip")
    assert not Lease.objects.filter(item__sample=queued[0]).exists()


def test_the_flag_form_posts_to_the_flag_view_and_comes_back(team, queued):
    client = team.client("expert")
    body = client.get(url("label", team)).content.decode()
    flag_url = reverse("labelling:sample_flag", args=[team.project.pk, queued[0].pk])
    assert f'action="{flag_url}"' in body
    response = client.post(
        flag_url,
        {
            "kind": "ambiguous",
            "note": "two products",
            "next": f"{url('label', team)}?after_flag={queued[0].pk}",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "review number 1" in response.content.decode()
    assert Flag.objects.get().kind == "ambiguous"
    assert Annotation.objects.get().kind == "skip"


def test_leaving_the_page_releases_the_leases(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    lease = Lease.objects.get()
    response = client.post(url("label_release", team), {"item": [lease.item_id, "junk"]})
    assert response.status_code == 200
    assert not Lease.objects.exists()
    assert QueueItem.objects.get(pk=lease.item_id).claims == 0
    assert team.client(team.outsider).post(url("label_release", team)).status_code == 404


def test_a_reserved_hotkey_falls_back_to_the_number_key(team):
    LabelClass.objects.filter(pk=team.classes[0].pk).update(hotkey="s")
    LabelClass.objects.filter(pk=team.classes[1].pk).update(hotkey="g")
    team.project.refresh_from_db()
    keys = [(b["label"].name, b["keys"]) for b in label_buttons(team.project)]
    assert keys == [("great", ["1"]), ("other", ["g", "2"])]


def test_the_project_page_offers_labelling_to_labellers_only(team):
    detail = reverse("labelling:project_detail", args=[team.project.pk])
    assert "Start labelling" in team.client("expert").get(detail).content.decode()
    assert "Start labelling" not in team.client("product_manager").get(detail).content.decode()


def test_a_page_reload_keeps_the_same_sample(team, queued):
    client = team.client("expert")
    client.get(url("label", team))
    assert "review number 0" in client.get(url("label", team)).content.decode()
    assert Lease.objects.count() == 1
    assert queue_next(project=team.project, user=team.users["expert"]).item.sample == queued[0]
