"""Shared fixtures for browser tests: Debian's Chromium driven by Playwright.

Use ``page`` with pytest-django's ``live_server`` (which needs
``@pytest.mark.django_db(transaction=True)``) and ``login(user)`` to sign in
through the real login form.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
PASSWORD = "pw-for-tests-1"  # what tests.factories.UserFactory sets


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module.

    While Playwright runs, its asyncio loop counts as running in this thread,
    so Django would refuse ORM calls from tests and fixtures; the switch that
    allows them is set only for that time (module scope: a later test that
    starts ``manage.py check --deploy`` must not inherit it).
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests"
        )
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    # Asking for the live server here makes the page close before the server
    # and the test database go: a page still open could send a request (a
    # lease released on unload, an htmx poll) while the database is being
    # flushed, and the two deadlock.
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot_dir():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def login(page, live_server):
    """``login(user)`` signs in through the login form, as a person would."""

    def login(user, password=PASSWORD):
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", user.get_username())
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login/" not in url)

    return login
