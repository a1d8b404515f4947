"""Every page names its icon, so browsers don't ask for a missing /favicon.ico."""

import re

from django.contrib.staticfiles import finders


def test_pages_link_an_icon_that_exists(team):
    response = team.client("expert").get("/")
    assert response.status_code == 200
    body = response.content.decode()
    match = re.search(r'<link rel="icon" href="([^"]+)"', body)
    assert match, "no icon link on the page"
    name = match.group(1).split("/static/", 1)[1]
    assert finders.find(name), f"{name} is not among the static files"
