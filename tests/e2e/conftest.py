"""Shared fixtures for browser tests: Debian's Chromium driven by Playwright.

Use ``page`` with pytest-django's ``live_server`` (which needs
``@pytest.mark.django_db(transaction=True)``) and ``login(user)`` to sign in
through the real login form.
"""

import contextlib
import os
import threading
import time
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
    with _server_requests() as requests:
        yield page
        # Closing alone is not enough: the labelling page answers "pagehide"
        # with a beacon (release its leases) that reaches the server after
        # close() returned, and Playwright does not report beacons. Leave
        # every page first, then wait until the server has been idle a while.
        try:
            for open_page in context.pages:
                open_page.goto("about:blank")
            requests.wait_idle(quiet=0.3)
        finally:
            context.close()
            requests.wait_idle(quiet=0)


class _Requests:
    """Requests the live server (a thread of this process) is handling,
    counted by Django's request signals."""

    def __init__(self):
        self.active = 0
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def started(self, **kwargs):
        with self.lock:
            self.active += 1
            self.last = time.monotonic()

    def finished(self, **kwargs):
        with self.lock:
            self.active -= 1
            self.last = time.monotonic()

    def wait_idle(self, quiet, timeout=5.0):
        """Until no request is being handled and none started or ended for
        ``quiet`` seconds, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.active <= 0 and time.monotonic() - self.last >= quiet:
                    return
            time.sleep(0.02)


@contextlib.contextmanager
def _server_requests():
    from django.core.signals import request_finished, request_started

    requests = _Requests()
    request_started.connect(requests.started, weak=False)
    request_finished.connect(requests.finished, weak=False)
    try:
        yield requests
    finally:
        request_started.disconnect(requests.started)
        request_finished.disconnect(requests.finished)


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
