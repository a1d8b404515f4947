import re

import pytest
from django.test import Client
from django.urls import reverse

from labelling.models import Annotation, Flag, QueueItem, Sample, SampleRevision
from labelling.services.cleaning import sample_flag, sample_revise
from leanml_site.models import AuditEvent
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db

XSS_TEXT = 'Nice<br />tea <script>alert("x")</script><img src=x onerror="alert(1)">'


@pytest.fixture
def project(team):
    team.project.fields = [
        {"name": "text", "kind": "text", "shown": True},
        {"name": "stars", "kind": "number", "shown": True},
    ]
    team.project.save()
    return team.project


def list_url(project, **params):
    url = reverse("labelling:sample_list", args=[project.pk])
    if params:
        from urllib.parse import urlencode

        url += "?" + urlencode(params)
    return url


def detail_url(sample):
    return reverse("labelling:sample_detail", args=[sample.project_id, sample.pk])


def ids_in(response):
    """External ids of the rows in a browser page, in order."""
    return re.findall(r'class="id"><a href="[^"]+">([^<]+)</a>', response.content.decode())


def make(project, external_id, text="plain text", **fields):
    return SampleFactory(
        project=project, external_id=external_id, data={"text": text, "stars": 3}, **fields
    )


# --- the browser ----------------------------------------------------------------------


def test_it_lists_the_projects_samples(team, project):
    make(project, "a1", "first review")
    SampleFactory(project=team.other_project, external_id="elsewhere")
    response = team.client("product_manager").get(list_url(project))
    assert response.status_code == 200
    assert ids_in(response) == ["a1"]
    assert b"first review" in response.content
    assert b"Next page" in response.content


def test_it_escapes_html_in_sample_text(team, project):
    make(project, "<b>id</b>", XSS_TEXT)
    body = team.client("expert").get(list_url(project)).content.decode()
    assert "<script>alert" not in body
    assert "<img src=x" not in body
    assert "&lt;script&gt;alert" in body
    assert "&lt;b&gt;id&lt;/b&gt;" in body


def test_it_redirects_anonymous_to_login(project):
    response = Client().get(list_url(project))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_hides_the_browser_from_outsiders(team, project):
    assert team.client(team.outsider).get(list_url(project)).status_code == 404


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"label": "great"}, ["labelled-great"]),
        (
            {"label": "none"},
            ["plain", "disputed", "flagged", "holdout", "monitored", "excluded-no-flag"],
        ),
        ({"consensus_state": "disputed"}, ["disputed"]),
        ({"flag": "any"}, ["flagged"]),
        ({"flag": "corrupt"}, ["flagged"]),
        ({"flag": "ambiguous"}, []),
        ({"split": "holdout"}, ["holdout"]),
        ({"source": "monitoring"}, ["monitored"]),
        ({"status": "excluded"}, ["flagged", "excluded-no-flag"]),
        ({"annotator": "expert"}, ["labelled-great"]),
        ({"q": "RARE word"}, ["holdout"]),
        ({"q": "monitored"}, ["monitored"]),
        ({"label": "great", "split": "train"}, ["labelled-great"]),
    ],
)
def test_each_filter_narrows_the_list(team, project, params, expected):
    great = team.classes[0]
    labelled = make(project, "labelled-great", consensus_state="agreed", consensus_label=great)
    Annotation.objects.create(
        project=project, sample=labelled, annotator=team.users["expert"], label=great
    )
    make(project, "plain")
    make(project, "disputed", consensus_state="disputed")
    flagged = make(project, "flagged")
    sample_flag(sample=flagged, by=team.users["expert"], kind="corrupt")
    make(project, "holdout", "a rare word here", split="holdout")
    make(project, "monitored", source="monitoring")
    make(project, "excluded-no-flag", status="excluded")
    Sample.objects.exclude(external_id="holdout").update(split="train")
    if params.get("label") == "great":
        params = {**params, "label": great.pk}
    if params.get("annotator") == "expert":
        params = {**params, "annotator": team.users["expert"].pk}

    response = team.client("expert").get(list_url(project, **params))

    assert response.status_code == 200
    assert sorted(ids_in(response)) == sorted(expected)


def test_flag_kinds_read_as_words_in_the_list(team, project):
    sample_flag(sample=make(project, "a1"), by=team.users["expert"], kind="out_of_scope")
    body = team.client("expert").get(list_url(project)).content.decode()
    assert '<span class="pill bad">out of scope</span>' in body


def test_a_bad_filter_value_is_a_clear_error(team, project):
    make(project, "a1")
    response = team.client("expert").get(list_url(project, label="abc"))
    assert response.status_code == 400
    assert b"label: Select a valid choice. abc is not one of the available choices." in (
        response.content
    )
    assert ids_in(response) == []


def test_keyset_pages_go_forward_and_back_keeping_filters(team, project):
    Sample.objects.bulk_create(
        Sample(
            project=project,
            external_id=f"s{i:03}",
            data={"text": "t"},
            content_hash=f"h{i}",
            split="train" if i % 2 else "holdout",
        )
        for i in range(130)
    )
    client = team.client("expert")
    first = client.get(list_url(project, split="train"))
    assert ids_in(first) == [f"s{i:03}" for i in range(1, 100, 2)]
    assert b"\xe2\x86\x90 Previous</span>" in first.content  # disabled on page one

    next_link = re.search(r'<a href="([^"]+)"[^>]*>Next page', first.content.decode()).group(1)
    next_link = next_link.replace("&amp;", "&")
    assert "split=train" in next_link and "after=" in next_link
    second = client.get(list_url(project) + next_link)
    assert ids_in(second) == [f"s{i:03}" for i in range(101, 130, 2)]
    assert b"Next page \xe2\x86\x92</span>" in second.content  # the last page

    prev_link = re.search(r'<a href="([^"]+)"[^>]*>← Previous', second.content.decode())
    prev_link = prev_link.group(1).replace("&amp;", "&")
    assert "split=train" in prev_link and "before=" in prev_link
    back = client.get(list_url(project) + prev_link)
    assert ids_in(back) == ids_in(first)


def test_htmx_gets_only_the_results(team, project):
    make(project, "a1")
    response = team.client("expert").get(list_url(project), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert ids_in(response) == ["a1"]
    assert "HX-Request" in response["Vary"]


# --- the sample page ------------------------------------------------------------------


def test_the_sample_page_shows_data_escaped_with_line_breaks(team, project):
    sample = make(project, "x1", XSS_TEXT)
    body = team.client("product_manager").get(detail_url(sample)).content.decode()
    assert "Nice<br>tea &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body
    assert "<script>alert" not in body and "<img src=x" not in body


def test_the_sample_page_shows_history(team, project):
    expert, ds = team.users["expert"], team.users["data_scientist"]
    sample = make(project, "x1", "old text")
    great, other = team.classes
    Annotation.objects.create(
        project=project, sample=sample, annotator=expert, label=great, seconds=4.2
    )
    Annotation.objects.create(project=project, sample=sample, annotator=expert, label=other)
    sample_revise(sample=sample, by=ds, changes={"text": "new text"}, note="fixed typo")
    Annotation.objects.create(project=project, sample=sample, annotator=ds, label=great, revision=2)
    flag = sample_flag(sample=sample, by=expert, kind="ambiguous", note="hard one")
    QueueItem.objects.create(project=project, sample=sample, reason="Model unsure: p=0.51")

    response = team.client("expert").get(detail_url(sample))
    body = response.content.decode()

    assert response.status_code == 200
    assert "new text" in body and "old text" in body  # current and the original revision
    assert "Revision 1" in body and "Revision 2" in body and "fixed typo" in body
    assert body.count('<span class="pill ok">current</span>') >= 2  # two annotators' latest
    assert "4.2 s" in body
    assert body.count("older text</span>") == 2  # both of the expert's labels
    assert (
        "hard one" in body
        and reverse("labelling:flag_resolve", args=[project.pk, sample.pk, flag.pk]) in body
    )
    assert "Model unsure: p=0.51" in body


def test_the_sample_page_hides_cleaning_forms_from_product_managers(team, project):
    sample = make(project, "x1")
    body = team.client("product_manager").get(detail_url(sample)).content.decode()
    assert reverse("labelling:sample_revise", args=[project.pk, sample.pk]) not in body
    assert reverse("labelling:sample_flag", args=[project.pk, sample.pk]) not in body


def test_the_sample_page_is_404_for_outsiders_and_other_projects(team, project):
    sample = make(project, "x1")
    assert team.client(team.outsider).get(detail_url(sample)).status_code == 404
    elsewhere = SampleFactory(project=team.other_project)
    url = reverse("labelling:sample_detail", args=[project.pk, elsewhere.pk])
    assert team.client("owner").get(url).status_code == 404
    assert Client().get(detail_url(sample)).status_code == 302


# --- correcting a field ---------------------------------------------------------------


def revise_url(sample):
    return reverse("labelling:sample_revise", args=[sample.project_id, sample.pk])


def test_an_expert_corrects_a_field(team, project):
    sample = make(project, "x1", "teh text")
    response = team.client("expert").post(
        revise_url(sample), {"field": "text", "value": "the text", "note": "typo"}
    )
    assert response.status_code == 302 and response["Location"] == detail_url(sample)
    sample.refresh_from_db()
    assert sample.data["text"] == "the text" and sample.revision == 2
    assert list(sample.revisions.values_list("number", "note")) == [
        (1, "as imported"),
        (2, "typo"),
    ]


def test_a_wrong_kind_is_refused_on_the_page(team, project):
    sample = make(project, "x1")
    response = team.client("expert").post(revise_url(sample), {"field": "stars", "value": "abc"})
    assert response.status_code == 400
    assert "Field &#x27;stars&#x27; is a number; &#x27;abc&#x27; is not a number." in (
        response.content.decode()
    )
    assert 'value="abc"' in response.content.decode()  # what was typed is kept
    assert not SampleRevision.objects.exists()


@pytest.mark.parametrize("value", ["", "  \r\n  "])
def test_an_empty_text_is_refused_on_the_page_at_the_field(team, project, value):
    sample = make(project, "x1", "the text")
    response = team.client("expert").post(
        revise_url(sample), {"field": "text", "value": value, "note": "oops"}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert re.search(
        r'<div class="error-box" role="alert" id="revise-error-1">Field &#x27;text&#x27; is the '
        r"project&#x27;s text field and needs a value; it cannot be empty.</div>",
        body,
    )
    assert 'aria-describedby="revise-error-1"' in body
    assert 'value="oops"' in body  # the note typed is kept
    assert not SampleRevision.objects.exists()
    sample.refresh_from_db()
    assert sample.data["text"] == "the text"


def test_a_long_note_is_refused_on_the_page_at_the_note(team, project):
    sample = make(project, "x1", "the text")
    response = team.client("expert").post(
        revise_url(sample), {"field": "text", "value": "the new text", "note": "n" * 2001}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert (
        '<div class="error-box" role="alert" id="revise-note-error-1">The note is 2,001 '
        "characters long; keep it to 2,000 characters at most.</div>" in body
    )
    assert "the new text</textarea>" in body
    assert not SampleRevision.objects.exists()


def test_an_unchanged_textarea_is_not_a_change(team, project):
    sample = make(project, "x1", "line one\nline two")
    response = team.client("expert").post(
        revise_url(sample), {"field": "text", "value": "line one\r\nline two"}
    )
    assert response.status_code == 400
    assert b"Nothing changed" in response.content
    assert not SampleRevision.objects.exists()


def test_product_managers_may_not_correct(team, project):
    sample = make(project, "x1")
    response = team.client("product_manager").post(
        revise_url(sample), {"field": "text", "value": "x"}
    )
    assert response.status_code == 403
    sample.refresh_from_db()
    assert sample.revision == 0 and sample.data["text"] == "plain text"


def test_correcting_needs_login_membership_and_post(team, project):
    sample = make(project, "x1")
    assert Client().post(revise_url(sample), {"field": "text", "value": "x"}).status_code == 302
    outsider = team.client(team.outsider)
    assert outsider.post(revise_url(sample), {"field": "text", "value": "x"}).status_code == 404
    assert team.client("expert").get(revise_url(sample)).status_code == 405
    assert not SampleRevision.objects.exists()


# --- flags ----------------------------------------------------------------------------


def flag_url(sample):
    return reverse("labelling:sample_flag", args=[sample.project_id, sample.pk])


def test_an_expert_flags_a_sample(team, project):
    sample = make(project, "x1")
    response = team.client("expert").post(flag_url(sample), {"kind": "corrupt", "note": "garbled"})
    assert response.status_code == 302 and response["Location"] == detail_url(sample)
    sample.refresh_from_db()
    assert sample.status == "excluded"
    flag = Flag.objects.get(sample=sample)
    assert (flag.kind, flag.note, flag.created_by) == ("corrupt", "garbled", team.users["expert"])


def test_a_duplicate_flag_names_the_other_sample_by_external_id(team, project):
    sample, original = make(project, "x1"), make(project, "orig-7")
    team.client("expert").post(flag_url(sample), {"kind": "duplicate", "duplicate_of": "orig-7"})
    assert Flag.objects.get(sample=sample).duplicate_of == original


def test_an_unknown_duplicate_id_is_a_clear_error(team, project):
    sample = make(project, "x1")
    SampleFactory(project=team.other_project, external_id="theirs")
    client = team.client("expert")
    response = client.post(
        flag_url(sample), {"kind": "duplicate", "duplicate_of": "theirs"}, follow=True
    )
    assert "No sample with id &#x27;theirs&#x27; in this project." in response.content.decode()
    response = client.post(flag_url(sample), {"kind": "weird"}, follow=True)
    assert "Unknown flag kind &#x27;weird&#x27;" in response.content.decode()
    assert not Flag.objects.exists()
    sample.refresh_from_db()
    assert sample.status == "active"


@pytest.mark.parametrize(
    ("next_url", "safe"),
    [
        ("/projects/1/label/", True),
        ("https://evil.example/phish", False),
        ("//evil.example/phish", False),
        ("javascript:alert(1)", False),
    ],
)
def test_flagging_goes_to_next_only_when_it_is_local(team, project, next_url, safe):
    sample = make(project, "x1")
    response = team.client("expert").post(flag_url(sample), {"kind": "corrupt", "next": next_url})
    assert response.status_code == 302
    assert response["Location"] == (next_url if safe else detail_url(sample))
    assert Flag.objects.filter(sample=sample).exists()


def test_product_managers_and_outsiders_may_not_flag(team, project):
    sample = make(project, "x1")
    assert (
        team.client("product_manager").post(flag_url(sample), {"kind": "corrupt"}).status_code
        == 403
    )
    assert team.client(team.outsider).post(flag_url(sample), {"kind": "corrupt"}).status_code == 404
    assert Client().post(flag_url(sample), {"kind": "corrupt"}).status_code == 302
    assert not Flag.objects.exists()


def resolve_url(flag):
    return reverse("labelling:flag_resolve", args=[flag.sample.project_id, flag.sample_id, flag.pk])


def test_resolving_a_flag_returns_the_sample_to_training(team, project):
    sample = make(project, "x1")
    flag = sample_flag(sample=sample, by=team.users["expert"], kind="corrupt")
    response = team.client("data_scientist").post(resolve_url(flag), {"resolution": "fixed"})
    assert response.status_code == 302 and response["Location"] == detail_url(sample)
    flag.refresh_from_db()
    sample.refresh_from_db()
    assert flag.resolution == "fixed" and flag.resolved_by == team.users["data_scientist"]
    assert sample.status == "active"
    assert AuditEvent.objects.filter(action="flag.resolve").count() == 1


def test_resolving_needs_a_resolution_and_the_right_role(team, project):
    sample = make(project, "x1")
    flag = sample_flag(sample=sample, by=team.users["expert"], kind="corrupt")
    client = team.client("expert")
    response = client.post(resolve_url(flag), {"resolution": " "}, follow=True)
    assert b"Say how the flag was resolved." in response.content
    pm = team.client("product_manager")
    assert pm.post(resolve_url(flag), {"resolution": "x"}).status_code == 403
    other = make(project, "x2")
    wrong = reverse("labelling:flag_resolve", args=[project.pk, other.pk, flag.pk])
    assert client.post(wrong, {"resolution": "x"}).status_code == 404
    flag.refresh_from_db()
    assert flag.resolved_at is None


# --- duplicates -----------------------------------------------------------------------


def test_duplicates_page_lists_groups_and_merges(team, project):
    a, b, c = (make(project, f"d{i}", "same words") for i in range(3))
    make(project, "unique", "different")
    url = reverse("labelling:duplicates", args=[project.pk])

    pm_body = team.client("product_manager").get(url).content.decode()
    assert "3 identical samples" in pm_body and "unique" not in pm_body
    assert reverse("labelling:duplicates_merge", args=[project.pk]) not in pm_body

    client = team.client("expert")
    assert (
        reverse("labelling:duplicates_merge", args=[project.pk]) in client.get(url).content.decode()
    )
    response = client.post(
        reverse("labelling:duplicates_merge", args=[project.pk]),
        {"keep": b.pk, "content_hash": b.content_hash},
    )
    assert response.status_code == 302
    flags = Flag.objects.filter(kind="duplicate")
    assert sorted(flags.values_list("sample_id", flat=True)) == sorted([a.pk, c.pk])
    assert {f.duplicate_of_id for f in flags} == {b.pk}
    assert "No exact duplicates" in client.get(url).content.decode()


def test_merge_refuses_a_stale_choice_and_product_managers(team, project):
    a, b = make(project, "d1", "same"), make(project, "d2", "same")
    merge = reverse("labelling:duplicates_merge", args=[project.pk])
    response = team.client("product_manager").post(
        merge, {"keep": a.pk, "content_hash": a.content_hash}
    )
    assert response.status_code == 403
    sample_revise(sample=a, by=team.users["expert"], changes={"text": "edited"})
    response = team.client("expert").post(
        merge, {"keep": a.pk, "content_hash": b.content_hash}, follow=True
    )
    assert "no longer an active member of this group" in response.content.decode()
    assert team.client(team.outsider).post(merge, {"keep": a.pk}).status_code == 404
    assert not Flag.objects.exists()


def test_a_long_resolution_is_refused_not_cut(team, project):
    sample = make(project, "x1")
    flag = sample_flag(sample=sample, by=team.users["expert"], kind="corrupt")
    client = team.client("expert")
    url = reverse("labelling:flag_resolve", args=[project.pk, sample.pk, flag.pk])
    response = client.post(url, {"resolution": "r" * 2001}, follow=True)
    assert "The resolution is 2,001 characters long" in response.content.decode()
    flag.refresh_from_db()
    assert flag.resolved_at is None
