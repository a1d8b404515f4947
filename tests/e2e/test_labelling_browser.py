"""An expert labels with the keyboard only, in a real browser."""

import time

import pytest

from labelling.models import Annotation, Flag, Lease
from labelling.services.queue import queue_add
from leanml_site.roles import Role
from tests.factories import (
    LabelClassFactory,
    MembershipFactory,
    ProjectFactory,
    SampleFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REVIEWS = [
    "I have bought several of the Vitality canned dog food products and have found them all to "
    "be of good quality.<br /><br />The product looks more like a stew than a processed meat and "
    "it smells better. My Labrador is finicky and she appreciates this product better than most.",
    "Product arrived labeled as Jumbo Salted Peanuts...the peanuts were actually small sized "
    "unsalted. Not sure if this was an error or if the vendor intended to represent the product "
    'as "Jumbo". <script>alert("x")</script>',
    "This is a confection that has been around a few centuries. It is a light, pillowy citrus "
    "gelatin with nuts - in this case Filberts.<br />And it is cut into tiny squares.",
    "If you are looking for the secret ingredient in Robitussin I believe I have found it. "
    "I got this in addition to the Root Beer Extract I ordered. <img src=x onerror=alert(1)>",
    "Great taffy at a great price. There was a wide assortment of yummy taffy.",
    "I got a wild hair for taffy and ordered this five pound bag.<br />The taffy was all very "
    "enjoyable with many flavors: watermelon, root beer, melon, peppermint, grape, etc.",
]

CARD = "#label-stage .label-card"


@pytest.fixture
def reviews(db):
    project = ProjectFactory(
        name="Fine-food reviews",
        overlap=1,
        guidelines="Label the review, not the delivery. great = the reviewer would buy again.",
        fields=[
            {"name": "review", "kind": "text", "shown": True},
            {"name": "product", "kind": "category", "shown": True},
            {"name": "score", "kind": "number", "shown": False},
        ],
    )
    LabelClassFactory(
        project=project,
        name="great",
        hotkey="1",
        order=0,
        colour="#2b8a3e",
        description="Enthusiastic: the reviewer would buy it again.",
    )
    LabelClassFactory(
        project=project,
        name="other",
        hotkey="2",
        order=1,
        colour="#c92a2a",
        description="Anything else: mixed, disappointed, off-topic.",
    )
    samples = [
        SampleFactory(
            project=project,
            external_id=f"review-{n:03d}",
            data={"review": REVIEWS[n % len(REVIEWS)], "product": f"B00{n:04d}", "score": 5},
        )
        for n in range(14)
    ]
    queue_add(project=project, sample_ids=[s.pk for s in samples])
    expert = UserFactory(username="erin")
    MembershipFactory(project=project, user=expert, role=Role.EXPERT)
    return project, expert, samples


def shown_sample(page):
    return page.get_attribute(CARD, "data-sample")


def wait_for_next(page, previous):
    page.wait_for_function(
        """(previous) => {
            const card = document.querySelector('#label-stage .label-card');
            return card && card.dataset.sample && card.dataset.sample !== previous
                && !card.classList.contains('is-loading');
        }""",
        arg=previous,
    )


def wait_for_rows(count, timeout=10):
    deadline = time.monotonic() + timeout
    while Annotation.objects.count() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return Annotation.objects.count()


def test_an_expert_labels_ten_samples_with_the_keyboard_only(
    reviews, page, login, live_server, screenshot_dir
):
    project, expert, samples = reviews
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Every response counts, the favicon's too (it used to be a 404 on every page).
    page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
    login(expert)
    page.goto(f"{live_server.url}/projects/{project.pk}/label/")
    page.wait_for_selector(CARD + "[data-sample]")
    # untrusted text is inert: shown as text, never run
    assert page.locator("#label-stage script").count() == 0
    assert page.locator("#label-stage img").count() == 0

    pressed = {}
    for n in range(10):
        sample_pk = shown_sample(page)
        page.wait_for_timeout(120)  # reading time, so the measured seconds are real
        key = "1" if n % 3 else "2"
        page.keyboard.press(key)
        pressed[int(sample_pk)] = "great" if key == "1" else "other"
        wait_for_next(page, sample_pk)
        if n == 4:
            page.wait_for_function(
                "() => document.querySelector('#label-progress .stat').textContent.trim() === '5'"
            )
            box = page.locator(".label-layout").bounding_box()
            height = min(860, box["y"] + box["height"] + 24)
            page.screenshot(
                path=str(screenshot_dir / "labelling.png"),
                clip={"x": 0, "y": 0, "width": 1280, "height": height},
            )

    assert wait_for_rows(10) == 10
    page.wait_for_timeout(300)
    rows = list(Annotation.objects.filter(project=project).select_related("label"))
    assert len(rows) == 10
    assert {row.sample_id: row.label.name for row in rows} == pressed
    assert all(row.seconds is not None and row.seconds > 0 for row in rows)
    assert all(row.annotator == expert and row.kind == "label" for row in rows)
    # the card on screen and the prefetched one: never more than two leases
    assert Lease.objects.filter(user=expert).count() <= 2
    assert errors == []


def test_skip_undo_flag_and_help_work_from_the_keyboard(reviews, page, login, live_server):
    project, expert, samples = reviews
    login(expert)
    page.goto(f"{live_server.url}/projects/{project.pk}/label/")
    page.wait_for_selector(CARD + "[data-sample]")

    page.keyboard.press("?")
    assert page.is_visible("#label-help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#label-help")

    first = shown_sample(page)
    page.keyboard.press("s")
    wait_for_next(page, first)
    second = shown_sample(page)
    page.wait_for_timeout(50)
    page.keyboard.press("1")
    wait_for_next(page, second)
    third = shown_sample(page)

    page.keyboard.press("z")  # back to the sample just labelled
    wait_for_next(page, third)
    assert shown_sample(page) == second
    assert "your last answer: great" in page.inner_text(CARD)
    page.keyboard.press("2")
    wait_for_next(page, second)
    assert shown_sample(page) == third  # and on to where we were

    assert wait_for_rows(3) == 3
    kinds = list(Annotation.objects.order_by("id").values_list("sample_id", "kind", "label__name"))
    assert kinds == [
        (int(first), "skip", None),
        (int(second), "label", "great"),
        (int(second), "label", "other"),
    ]

    # f opens the flag form; arrows pick a kind, Enter flags and moves on
    page.keyboard.press("f")
    page.wait_for_selector(CARD + " .label-flag[open]")
    page.keyboard.press("ArrowDown")  # from "duplicate" to "corrupt"
    page.keyboard.press("Enter")
    wait_for_next(page, third)
    assert wait_for_rows(4) == 4
    flag = Flag.objects.get()
    assert (flag.sample_id, flag.kind, flag.created_by) == (int(third), "corrupt", expert)
    assert Annotation.objects.order_by("-id").values_list("kind", flat=True)[0] == "skip"


def in_viewport(page, selector):
    return page.evaluate(
        """(selector) => {
            const box = document.querySelector(selector).getBoundingClientRect();
            return box.top >= 0 && box.bottom <= window.innerHeight;
        }""",
        selector,
    )


def test_a_refused_flag_keeps_the_sample_the_form_and_shows_why_at_the_field(
    reviews, page, login, live_server
):
    project, expert, samples = reviews
    # A long review: the card's foot (the flag form) is far below the fold.
    long_review = " ".join([REVIEWS[0]] * 12)
    for sample in samples:
        sample.data = {**sample.data, "review": long_review}
        sample.save(update_fields=["data"])
    login(expert)
    page.goto(f"{live_server.url}/projects/{project.pk}/label/")
    page.wait_for_selector(CARD + "[data-sample]")
    first = shown_sample(page)

    page.keyboard.press("f")
    page.wait_for_selector(CARD + " .label-flag[open]")
    page.check(CARD + " input[name=kind][value=duplicate]")
    page.fill(CARD + " input[name=duplicate_of]", "not-an-id")
    page.fill(CARD + " input[name=note]", "same as another")
    page.click(CARD + " .flag-form button[type=submit]")

    alert = CARD + " .flag-form [role=alert]"
    page.wait_for_selector(alert)
    page.wait_for_timeout(300)  # nothing else arrives: the page stays put
    assert shown_sample(page) == first
    assert page.inner_text(alert) == ("Not flagged: No sample with id 'not-an-id' in this project.")
    # at the "Duplicate of" field, which is marked, described by it and focused
    field = CARD + " input[name=duplicate_of]"
    assert page.get_attribute(field, "aria-invalid") == "true"
    assert page.get_attribute(field, "aria-describedby") == page.get_attribute(alert, "id")
    assert page.evaluate("() => document.activeElement.name") == "duplicate_of"
    # red, like every error, not the neutral colour of the form around it
    colour = "(el) => getComputedStyle(el).color"
    assert page.locator(alert).evaluate(colour) != page.locator(CARD + " .flag-form").evaluate(
        colour
    )
    assert in_viewport(page, alert) and in_viewport(page, field)
    # the form is open and keeps what was typed; the neutral box stays empty
    assert page.is_visible(CARD + " .label-flag[open]")
    assert page.is_checked(CARD + " input[name=kind][value=duplicate]")
    assert page.input_value(field) == "not-an-id"
    assert page.input_value(CARD + " input[name=note]") == "same as another"
    assert not page.is_visible("#label-alert")
    assert not Flag.objects.exists() and not Annotation.objects.exists()

    # corrected, the flag goes through and the page moves on
    original = samples[-1] if str(samples[-1].pk) != first else samples[0]
    page.fill(field, original.external_id)
    page.click(CARD + " .flag-form button[type=submit]")
    wait_for_next(page, first)
    flag = Flag.objects.get()
    assert (flag.sample_id, flag.kind, flag.duplicate_of_id, flag.note) == (
        int(first),
        "duplicate",
        original.pk,
        "same as another",
    )


def test_undo_is_offered_only_once_there_is_a_label_to_undo(reviews, page, login, live_server):
    project, expert, samples = reviews
    login(expert)
    page.goto(f"{live_server.url}/projects/{project.pk}/label/")
    page.wait_for_selector(CARD + "[data-sample]")
    first = shown_sample(page)
    assert page.locator(CARD + " .label-undo").count() == 1
    assert not page.is_visible(CARD + " .label-undo")
    page.keyboard.press("z")  # nothing to undo: nothing happens, nothing is said
    page.wait_for_timeout(300)
    assert shown_sample(page) == first and not page.is_visible("#label-alert")

    page.wait_for_timeout(100)
    page.keyboard.press("1")
    wait_for_next(page, first)
    # the card after it was fetched before any label: it offers undo all the same
    second = shown_sample(page)
    assert page.is_visible(CARD + " .label-undo")
    page.click(CARD + " .label-undo")
    wait_for_next(page, second)
    assert shown_sample(page) == first
    assert "your last answer: great" in page.inner_text(CARD)


def test_a_review_note_over_the_limit_is_refused_at_the_note(page, login, live_server):
    from labelling.models import Adjudication, Sample
    from labelling.services.consensus import consensus_refresh

    project = ProjectFactory(overlap=2, fields=[{"name": "text", "kind": "text", "shown": True}])
    great = LabelClassFactory(project=project, name="great", order=0)
    other = LabelClassFactory(project=project, name="other", order=1)
    expert, scientist = UserFactory(username="erin"), UserFactory(username="sam")
    MembershipFactory(project=project, user=expert, role=Role.EXPERT)
    MembershipFactory(project=project, user=scientist, role=Role.DATA_SCIENTIST)
    sample = SampleFactory(project=project, data={"text": "Tasty, but arrived late."})
    for user, label_class in ((expert, great), (scientist, other)):
        Annotation.objects.create(
            project=project, sample=sample, annotator=user, kind="label", label=label_class
        )
    consensus_refresh(project=project, sample_ids=[sample.pk])

    login(expert)
    page.goto(f"{live_server.url}/projects/{project.pk}/review/")
    note = page.locator(f"#review-{sample.pk} input[name=note]")
    assert note.get_attribute("maxlength") == "2000"
    note.evaluate("(input) => input.removeAttribute('maxlength')")  # as from devtools
    note.fill("n" * 2500)
    page.click(f"#review-{sample.pk} button[name=label][value='{great.pk}']")

    alert = page.locator(f"#review-{sample.pk} [role=alert]")
    alert.wait_for()
    assert alert.inner_text() == (
        "The note is 2,500 characters long; keep it to 2,000 characters at most."
    )
    note = page.locator(f"#review-{sample.pk} input[name=note]")
    assert note.get_attribute("aria-invalid") == "true"
    assert note.get_attribute("aria-describedby") == alert.get_attribute("id")
    assert note.input_value() == "n" * 2500
    assert not Adjudication.objects.exists()
    sample.refresh_from_db()
    assert sample.consensus_state == Sample.Consensus.DISPUTED
