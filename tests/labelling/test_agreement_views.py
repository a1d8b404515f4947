"""The agreement page and the selectors that feed it."""

from html import unescape

import pytest
from django.test import Client
from django.urls import reverse

from labelling.models import Annotation, Sample
from labelling.selectors_agreement import (
    current_labels_frame,
    project_agreement,
    settled_labels,
)
from labelling.services.consensus import consensus_refresh
from labelling.services.review import sample_adjudicate
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db

# The two-rater example of tests/ml/test_agreement.py: κ = 0.4, Fleiss = 13/33 ≈ 0.394,
# α = 14/33 ≈ 0.424, observed agreement 70 %.
EXPERT = "gggggg" + "oooo"
SCIENTIST = "ggggoooo" + "og"


def annotate(sample, user, label_class, seconds=None):
    Annotation.objects.create(
        project=sample.project,
        sample=sample,
        annotator=user,
        kind=Annotation.Kind.LABEL if label_class else Annotation.Kind.SKIP,
        label=label_class,
        seconds=seconds,
    )


@pytest.fixture
def labelled(team):
    team.project.overlap = 2
    team.project.save()
    great, other = team.classes
    by_letter = {"g": great, "o": other}
    samples = [SampleFactory(project=team.project) for _ in range(10)]
    for sample, e, s in zip(samples, EXPERT, SCIENTIST, strict=True):
        annotate(sample, team.users["expert"], by_letter[e], seconds=10)
        annotate(sample, team.users["data_scientist"], by_letter[s], seconds=30)
    consensus_refresh(project=team.project, sample_ids=[s.pk for s in samples])
    return samples


def agreement_url(team):
    return reverse("labelling:agreement", args=[team.project.pk])


def test_current_labels_frame_keeps_each_annotators_latest_answer(team):
    great, other = team.classes
    expert, owner = team.users["expert"], team.users["owner"]
    first, second = SampleFactory(project=team.project), SampleFactory(project=team.project)
    annotate(first, expert, great, seconds=3)
    annotate(first, expert, other, seconds=4)  # changed their mind: latest wins
    annotate(first, owner, great)
    annotate(second, owner, great)
    annotate(second, owner, None)  # then skipped: no current label
    SampleFactory(project=team.other_project)  # nothing from other projects
    frame = current_labels_frame(project=team.project)
    rows = sorted(map(tuple, frame[["item", "annotator", "label"]].to_numpy().tolist()))
    assert rows == sorted([(first.pk, expert.pk, other.pk), (first.pk, owner.pk, great.pk)])
    assert frame.loc[frame["annotator"] == expert.pk, "seconds"].tolist() == [4.0]


def test_current_labels_frame_is_one_query(team, labelled, django_assert_num_queries):
    with django_assert_num_queries(1):
        frame = current_labels_frame(project=team.project)
    assert len(frame) == 20


def test_empty_project_gives_an_empty_frame(team):
    frame = current_labels_frame(project=team.project)
    assert list(frame.columns) == ["item", "annotator", "label", "seconds"]
    assert frame.empty


def test_settled_labels_leave_out_ties_and_pending(team, labelled):
    settled = settled_labels(project=team.project)
    # 7 of the 10 samples agree; the 3 ties have no answer.
    assert len(settled) == 7
    assert set(settled) == {
        s.pk
        for s in Sample.objects.filter(
            project=team.project, consensus_state=Sample.Consensus.AGREED
        )
    }


def test_project_agreement_speaks_in_usernames_and_class_names(team, labelled):
    report = project_agreement(project=team.project)
    assert report.cohen_kappa.value == pytest.approx(0.4)
    assert report.fleiss_kappa.value == pytest.approx(13 / 33)
    assert report.krippendorff_alpha.value == pytest.approx(14 / 33)
    assert report.classes == ["great", "other"]
    assert {a.annotator for a in report.per_annotator} == {"expert", "data_scientist"}


def test_adjudication_counts_as_consensus_for_annotators(team, labelled):
    great, other = team.classes
    # Settle the three ties: sample 4 and 5 (expert g / scientist o) → other, 9 (o / g) → great.
    for index, answer in ((4, other), (5, other), (9, great)):
        sample_adjudicate(sample=labelled[index], by=team.users["owner"], label=answer)
    by_name = {a.annotator: a for a in project_agreement(project=team.project).per_annotator}
    assert by_name["expert"].compared == 10
    assert by_name["expert"].agreement_with_consensus == pytest.approx(0.7)
    assert by_name["data_scientist"].agreement_with_consensus == pytest.approx(1.0)


def test_page_shows_the_metrics_and_annotators(team, labelled):
    response = team.client("product_manager").get(agreement_url(team))
    assert response.status_code == 200
    html = unescape(response.content.decode())
    assert "Cohen's κ" in html and "0.400" in html
    assert "Fleiss' κ" in html and "0.394" in html
    assert "Krippendorff's α" in html and "0.424" in html
    assert "70%" in html  # observed agreement
    assert "on the 10 items labelled by exactly 2 annotators" in html.lower()
    # Per annotator: the expert spent 10 s a label (360 / hour), the scientist 30 s (120).
    assert "<td>expert</td>" in html and "<td>data_scientist</td>" in html
    assert '<td class="num">360</td>' in html and '<td class="num">120</td>' in html
    assert '<td class="num">10.0</td>' in html and '<td class="num">30.0</td>' in html
    # The label-pair table: 4 great/great, 3 mixed, 3 other/other.
    assert "Label pairs" in html
    assert '<td class="num diag">4</td>' in html and '<td class="num diag">3</td>' in html


@pytest.mark.parametrize("role", ["expert", "data_scientist", "product_manager", "owner"])
def test_every_member_may_read_it(team, labelled, role):
    assert team.client(role).get(agreement_url(team)).status_code == 200


def test_it_hides_other_projects_and_needs_login(team, labelled):
    assert team.client(team.outsider).get(agreement_url(team)).status_code == 404
    response = Client().get(agreement_url(team))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_empty_project_says_why_there_are_no_numbers(team):
    html = unescape(team.client("owner").get(agreement_url(team)).content.decode())
    assert "No item has labels from two annotators." in html
    assert "Fewer than two annotators have labelled." in html
    assert "Nobody has labelled a sample yet." in html


def test_single_class_says_kappa_is_undefined(team):
    team.project.overlap = 2
    team.project.save()
    for _ in range(3):
        sample = SampleFactory(project=team.project)
        annotate(sample, team.users["expert"], team.classes[0])
        annotate(sample, team.users["owner"], team.classes[0])
    html = unescape(team.client("owner").get(agreement_url(team)).content.decode())
    assert "Every label here is the same class, so chance agreement is 1" in html
    assert "100%" in html  # observed agreement is still defined


def test_usernames_are_escaped(team, labelled):
    expert = team.users["expert"]
    expert.username = "<b>bold</b>"
    expert.save()
    html = team.client("owner").get(agreement_url(team)).content.decode()
    assert "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
