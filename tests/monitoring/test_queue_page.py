# ruff: noqa: F811 (pytest fixtures imported from surfacing_fixtures)
"""The queue page and "surface now": who may see and change what, the mix
and reasons shown (escaped), and reprioritising through the labelling service."""

from unittest import mock

import pytest
from django.test import Client

from labelling.models import QueueItem
from labelling.services.queue import queue_add
from leanml_site.models import AuditEvent
from monitoring.models import SurfacingRun
from monitoring.services.surfacing import surfacing_request, surfacing_run
from tests.iterations.conftest import add_samples

from .surfacing_fixtures import crew, media, production, reviews  # noqa: F401

HOSTILE = '<script>alert("x")</script> & <b>bold</b>'


def client(crew, who):
    c = Client()
    c.force_login(crew.users[who])
    return c


@pytest.fixture
def queued(production):
    """A surfaced run in the queue, plus one imported item whose reason and
    data carry markup."""
    p = production
    request = surfacing_request(project=p.project, by=None, budget=12, queue=False)
    surfacing_run(run_id=request.pk)
    [sample] = add_samples(
        p.project, p.crew.classes, [("hostile-1", {"review": HOSTILE, "product": "B0"}, None)]
    )
    queue_add(project=p.project, sample_ids=[sample.pk], priority=0.9, reason=HOSTILE)
    return p


def test_queue_page_shows_the_mix_and_reasons_escaped(queued):
    response = client(queued.crew, "expert").get(f"/projects/{queued.project.pk}/queue/")
    assert response.status_code == 200
    html = response.content.decode()
    assert HOSTILE not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    mix = {row["strategy"]: row["n"] for row in response.context["mix"]}
    # 12 surfaced in DEFAULT_MIX proportions (uncertainty first) and the imported one.
    assert set(mix) <= {"uncertainty", "disagreement", "novelty", "feedback", "random", "imported"}
    assert max(mix, key=mix.get) == "uncertainty"
    assert sum(mix.values()) == 13 == response.context["total"]
    assert mix["imported"] == 1
    # The next in line are the highest priorities, each with its reason.
    items = response.context["items"]
    assert [i.priority for i in items] == sorted((i.priority for i in items), reverse=True)
    for item in items:
        assert item.reason and (f"<td>{item.reason}</td>" in html or item.reason == HOSTILE)
    # An expert sees the page but no reprioritising controls.
    assert "Move uncertainty up" not in html and 'name="priority"' not in html


def test_data_scientist_moves_a_strategy_and_an_item(queued):
    p = queued
    c = client(p.crew, "data_scientist")
    page = c.get(f"/projects/{p.project.pk}/queue/").content.decode()
    assert "Move random up" in page and 'name="priority"' in page
    before = dict(
        QueueItem.objects.filter(project=p.project, strategy="random").values_list("id", "priority")
    )
    others = dict(
        QueueItem.objects.filter(project=p.project)
        .exclude(strategy="random")
        .values_list("id", "priority")
    )
    response = c.post(
        f"/projects/{p.project.pk}/queue/strategy/", {"strategy": "random", "direction": "up"}
    )
    assert response.status_code == 302
    after = dict(
        QueueItem.objects.filter(project=p.project, strategy="random").values_list("id", "priority")
    )
    assert after == {k: pytest.approx(v + 1.0) for k, v in before.items()}
    assert others == dict(
        QueueItem.objects.filter(project=p.project)
        .exclude(strategy="random")
        .values_list("id", "priority")
    )
    assert AuditEvent.objects.filter(
        action="queue.reprioritise", actor=p.crew.users["data_scientist"]
    ).exists()
    # The random items now come first, their row tops the mix, and the page
    # says how many of the next in line they are.
    page = c.get(f"/projects/{p.project.pk}/queue/")
    assert page.context["items"][0].strategy == "random"
    assert page.context["mix"][0]["strategy"] == "random"
    assert page.context["mix"][0]["next"] == len(before)
    assert sum(row["next"] for row in page.context["mix"]) == len(page.context["items"])
    moved = list(page.context["messages"])
    n, shown = len(before), len(page.context["items"])
    assert [str(m) for m in moved] == [
        f"{n} “random” item{'s' if n != 1 else ''} moved up by 1: {n} of the next {shown} "
        f"in line {'are' if n != 1 else 'is'} “random”."
    ]

    item = QueueItem.objects.filter(project=p.project, strategy="uncertainty").first()
    response = c.post(
        f"/projects/{p.project.pk}/queue/items/{item.pk}/priority/", {"priority": "7.5"}
    )
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.priority == 7.5
    # Not a number: nothing changes, and the message says what was wrong.
    response = c.post(
        f"/projects/{p.project.pk}/queue/items/{item.pk}/priority/",
        {"priority": "soon"},
        follow=True,
    )
    item.refresh_from_db()
    assert item.priority == 7.5
    assert (
        f"Priority of {item.sample.external_id}: Enter a number. Nothing was changed."
        in response.content.decode()
    )


def test_unknown_strategy_or_direction_changes_nothing(queued):
    p = queued
    c = client(p.crew, "owner")
    snapshot = list(QueueItem.objects.order_by("id").values_list("priority", flat=True))
    response = c.post(
        f"/projects/{p.project.pk}/queue/strategy/",
        {"strategy": "hunch", "direction": "up"},
        follow=True,
    )
    assert "No open item has the strategy “hunch”." in response.content.decode()
    response = c.post(
        f"/projects/{p.project.pk}/queue/strategy/", {"strategy": "random", "direction": "sideways"}
    )
    assert response.status_code == 400
    assert snapshot == list(QueueItem.objects.order_by("id").values_list("priority", flat=True))


@pytest.mark.parametrize("who", ["expert", "product_manager"])
def test_only_data_scientists_and_owners_reprioritise(queued, who):
    p = queued
    item = QueueItem.objects.filter(project=p.project).first()
    c = client(p.crew, who)
    snapshot = list(QueueItem.objects.order_by("id").values_list("priority", flat=True))
    assert (
        c.post(
            f"/projects/{p.project.pk}/queue/strategy/", {"strategy": "random", "direction": "up"}
        ).status_code
        == 403
    )
    assert (
        c.post(
            f"/projects/{p.project.pk}/queue/items/{item.pk}/priority/", {"priority": "9"}
        ).status_code
        == 403
    )
    assert c.get(f"/projects/{p.project.pk}/surfacing/").status_code == 403
    assert c.post(f"/projects/{p.project.pk}/surfacing/", {"budget": 5}).status_code == 403
    assert snapshot == list(QueueItem.objects.order_by("id").values_list("priority", flat=True))
    assert not SurfacingRun.objects.filter(requested_by=p.crew.users[who]).exists()


def test_outsider_gets_404_everywhere(queued):
    p = queued
    c = client(p.crew, "outsider")
    item = QueueItem.objects.filter(project=p.project).first()
    run = SurfacingRun.objects.filter(project=p.project).first()
    base = f"/projects/{p.project.pk}"
    assert c.get(f"{base}/queue/").status_code == 404
    assert (
        c.post(f"{base}/queue/strategy/", {"strategy": "random", "direction": "up"}).status_code
        == 404
    )
    assert c.post(f"{base}/queue/items/{item.pk}/priority/", {"priority": "9"}).status_code == 404
    assert c.get(f"{base}/surfacing/").status_code == 404
    assert c.get(f"{base}/surfacing/{run.pk}/").status_code == 404


def test_surface_now_queues_a_run_and_shows_its_result(
    production, django_capture_on_commit_callbacks
):
    p = production
    c = client(p.crew, "data_scientist")
    base = f"/projects/{p.project.pk}/surfacing/"
    form = {"budget": 6, "since_days": 7, "mix_uncertainty": 1, "mix_random": 1}
    with (
        mock.patch("monitoring.tasks.surfacing_run_task.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = c.post(base, form)
    run = SurfacingRun.objects.get(project=p.project)
    delay.assert_called_once_with(run.pk)
    assert response.status_code == 302 and response["Location"] == f"{base}{run.pk}/"
    assert (run.budget, run.mix, run.requested_by) == (
        6,
        {"uncertainty": 1.0, "random": 1.0},
        p.crew.users["data_scientist"],
    )
    waiting = c.get(f"{base}{run.pk}/").content.decode()
    assert "Queued" in waiting and 'hx-trigger="every 2s"' in waiting
    surfacing_run(run_id=run.pk)  # what the worker does
    page = c.get(f"{base}{run.pk}/", HTTP_HX_REQUEST="true")
    html = page.content.decode()
    assert page.templates[0].name == "monitoring/partials/surfacing_run.html"
    assert "Succeeded" in html and "hx-trigger" not in html
    assert html.count("<code>uncertainty</code>") >= 3 and "uncertain: " in html
    assert "6 of 300 candidate logs surfaced" in html


def test_surface_now_refuses_bad_input_naming_the_field(production):
    p = production
    c = client(p.crew, "owner")
    base = f"/projects/{p.project.pk}/surfacing/"
    response = c.post(base, {"budget": 0, "since_days": 7})
    assert response.status_code == 400
    assert "budget" in response.context["form"].errors
    response = c.post(base, {"budget": 5, "since_days": 7, "mix_random": -1})
    assert response.status_code == 400
    assert "mix_random" in response.context["form"].errors
    response = c.post(base, {"budget": 5, "since_days": 7, "mix_random": 0})
    assert response.status_code == 400
    assert "At least one strategy needs a share above 0." in response.content.decode()
    assert not SurfacingRun.objects.exists()


@pytest.fixture
def mislabelled(crew, media):
    """v2, trained by the real training path on the reviews after the 8
    training reviews a first model found most clearly "great" were
    relabelled "other" (plain mistakes a confident model should catch), and
    promoted."""
    import pandas as pd

    from iterations.models import ModelVersion
    from iterations.services.artifacts import ensemble_load
    from iterations.services.training import training_request, training_run
    from labelling.models import Sample

    def train():
        job = training_request(project=crew.project, by=crew.user, queue=False)
        job = training_run(job_id=job.pk)
        assert job.state == "succeeded", job.error
        return ModelVersion.objects.get(pk=job.version_id)

    clean = ensemble_load(train())
    great = list(
        Sample.objects.filter(project=crew.project, split="train", consensus_label__name="great")
    )
    proba = clean.predict_proba(pd.DataFrame.from_records([s.data for s in great]))
    column = list(clean.classes_).index("great")
    flipped = [great[i].pk for i in proba[:, column].argsort()[::-1][:8]]
    Sample.objects.filter(pk__in=flipped).update(consensus_label=crew.classes["other"])
    version = train()
    ModelVersion.objects.filter(pk=version.pk).update(status="production")
    crew.flipped = set(flipped)
    return crew


def test_label_errors_are_listed_for_review_not_queued(mislabelled):
    from labelling.models import Annotation

    crew = mislabelled
    url = f"/projects/{crew.project.pk}/queue/label-errors/"
    response = client(crew, "owner").get(url)
    assert response.status_code == 200
    suspects = list(response.context["page"].paginator.object_list)  # every page's
    assert response.context["suspects"] == suspects[:20]  # this page's
    found = {s.sample.pk for s in suspects}
    # Most of the mistakes are caught, and they lead the list.
    assert len(found & crew.flipped) >= 6, (len(found & crew.flipped), len(found))
    top = {s.sample.pk for s in suspects[:10]}
    assert len(top & crew.flipped) >= 5, [(s.sample.pk, s.score) for s in suspects[:10]]
    for s in suspects:
        assert s.reason.startswith(f"possible label error: labelled {s.given}")
        assert s.suggested != s.given
    assert [s.score for s in suspects] == sorted((s.score for s in suspects), reverse=True)
    # Nothing was put in the labelling queue.
    assert not QueueItem.objects.filter(project=crew.project).exists()
    html = response.content.decode()
    # a settle form per suspect on the page
    assert html.count('action="/projects/') >= len(response.context["suspects"])
    # The expert judges the sample itself, shown on the list (escaped).
    from django.utils.html import escape

    text_field = crew.project.text_field
    for s in suspects[:5]:
        assert escape(s.sample.data[text_field]) in html
    top_sample = suspects[0].sample
    top_sample.data = {**top_sample.data, text_field: "Tasty <script>alert(1)</script> tea"}
    top_sample.save(update_fields=["data"])
    shown = client(crew, "owner").get(url).content.decode()
    assert "Tasty &lt;script&gt;alert(1)&lt;/script&gt; tea" in shown
    assert "<script>alert(1)" not in shown

    # The expert who gave one of these labels is not asked to judge it.
    first = suspects[0].sample
    Annotation.objects.create(
        project=crew.project,
        sample=first,
        annotator=crew.users["expert"],
        label=first.consensus_label,
    )
    page = client(crew, "expert").get(url)
    mine = [s for s in page.context["suspects"] if s.sample.pk == first.pk]
    assert mine and mine[0].mine
    assert "you gave this label: someone else decides" in page.content.decode()
    assert 'name="review" value="label_error"' in html
    # The server refuses it too, whatever the form showed.
    from labelling.models import Adjudication

    adjudicate = f"/projects/{crew.project.pk}/review/{first.pk}/adjudicate/"
    settle_as = {"label": crew.classes[suspects[0].suggested].pk, "review": "label_error"}
    refused = client(crew, "expert").post(adjudicate, settle_as, follow=True)
    assert "a suspected label error is settled by someone else" in refused.content.decode()
    assert not Adjudication.objects.filter(sample=first).exists()
    # Settled by the owner through adjudication: it leaves the list.
    settle = client(crew, "owner").post(adjudicate, settle_as)
    assert settle.status_code == 302
    assert settle["Location"] == url
    assert Adjudication.objects.filter(sample=first, by=crew.users["owner"]).exists()
    after = client(crew, "owner").get(url).context["suspects"]
    assert first.pk not in {s.sample.pk for s in after}
    # Product managers read it without settle forms; outsiders see nothing.
    pm = client(crew, "product_manager").get(url).content.decode()
    assert "Settle as" not in pm
    assert client(crew, "outsider").get(url).status_code == 404


def test_label_errors_are_counted_and_paged_and_settling_returns_to_the_page(
    mislabelled, monkeypatch
):
    from labelling.models import Adjudication
    from monitoring import views

    crew = mislabelled
    monkeypatch.setattr(views, "LABEL_ERRORS_PER_PAGE", 3)
    url = f"/projects/{crew.project.pk}/queue/label-errors/"
    owner = client(crew, "owner")
    first = owner.get(url)
    total = first.context["total"]
    assert total > 6, total
    pages = -(-total // 3)
    html = first.content.decode()
    assert f"{total} suspected label errors</strong>, 1–3 on this page" in html
    assert f"Page 1 of {pages}" in html and 'href="?page=2"' in html
    second = owner.get(url, {"page": 2})
    rows = second.context["suspects"]
    everyone = list(first.context["page"].paginator.object_list)
    assert [s.sample.pk for s in rows] == [s.sample.pk for s in everyone[3:6]]
    assert f"{total} suspected label errors</strong>, 4–6 on this page" in second.content.decode()
    assert 'name="page" value="2"' in second.content.decode()
    # A page that is no number shows the first; one past the end, the last.
    assert owner.get(url, {"page": "x"}).context["page"].number == 1
    assert owner.get(url, {"page": 999}).context["page"].number == pages
    # Settling a suspect on page 2 comes back to page 2, one suspect fewer.
    target = rows[0]
    adjudicate = f"/projects/{crew.project.pk}/review/{target.sample.pk}/adjudicate/"
    answer = {"label": crew.classes[target.suggested].pk, "review": "label_error", "page": "2"}
    settled = owner.post(adjudicate, answer)
    assert settled.status_code == 302 and settled["Location"] == f"{url}?page=2"
    assert Adjudication.objects.filter(sample=target.sample).exists()
    back = owner.get(settled["Location"])
    assert back.context["total"] == total - 1
    assert target.sample.pk not in {s.sample.pk for s in back.context["suspects"]}
    # Anything but a page number is not carried into the redirect.
    target = back.context["suspects"][0]
    adjudicate = f"/projects/{crew.project.pk}/review/{target.sample.pk}/adjudicate/"
    answer = {**answer, "label": crew.classes[target.suggested].pk, "page": "//evil.example"}
    assert owner.post(adjudicate, answer)["Location"] == url


def test_the_api_lists_label_errors_and_refuses_the_labeller_settling_one(mislabelled):
    from labelling.models import Adjudication, Annotation

    crew = mislabelled
    url = f"/api/v1/projects/{crew.project.pk}/label-errors/"
    body = client(crew, "expert").get(url).json()
    assert body["problem"] is None and body["model_version"] == 2
    suspects = body["suspects"]
    assert len({s["sample"] for s in suspects} & crew.flipped) >= 6
    assert [s["score"] for s in suspects] == sorted((s["score"] for s in suspects), reverse=True)
    first = suspects[0]
    assert first["given"] != first["suggested"] and not first["labelled_by_you"]
    assert first["data"][crew.project.text_field]
    Annotation.objects.create(
        project=crew.project,
        sample_id=first["sample"],
        annotator=crew.users["expert"],
        label=crew.classes[first["given"]],
    )
    mine = client(crew, "expert").get(url).json()["suspects"]
    assert next(s for s in mine if s["sample"] == first["sample"])["labelled_by_you"]
    adjudicate = f"/api/v1/projects/{crew.project.pk}/samples/{first['sample']}/adjudicate/"
    answer = {"label": first["suggested"], "review": "label_error"}
    refused = client(crew, "expert").post(adjudicate, answer, content_type="application/json")
    assert refused.status_code == 400
    assert refused.json()["field"] == "review"
    assert "settled by someone else" in refused.json()["message"]
    odd = client(crew, "owner").post(
        adjudicate, {**answer, "review": "second look"}, content_type="application/json"
    )
    assert odd.status_code == 400 and odd.json()["field"] == "review"
    assert not Adjudication.objects.filter(sample_id=first["sample"]).exists()
    settled = client(crew, "owner").post(adjudicate, answer, content_type="application/json")
    assert settled.status_code == 201, settled.json()
    after = client(crew, "expert").get(url).json()["suspects"]
    assert first["sample"] not in {s["sample"] for s in after}


def test_label_errors_without_a_production_model_say_so(crew):
    response = client(crew, "owner").get(f"/projects/{crew.project.pk}/queue/label-errors/")
    assert response.status_code == 200
    assert "no production model" in response.content.decode()
    api = client(crew, "owner").get(f"/api/v1/projects/{crew.project.pk}/label-errors/").json()
    assert api["model_version"] is None and api["suspects"] == []
    assert "no production model" in api["problem"]
