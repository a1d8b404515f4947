"""Template filters for untrusted sample text and audit records."""

import json
import re

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

from leanml_site.roles import Capability, role_can

register = template.Library()

# Matches a literal <br>, <br/> or <br /> AFTER escaping, i.e. "&lt;br /&gt;".
_ESCAPED_BR = re.compile(r"&lt;br\s*/?&gt;", re.IGNORECASE)


@register.filter(name="sample_text")
def sample_text(value):
    """Escape sample text, then turn its literal ``<br />`` tags into line breaks.

    The text is escaped first, so the only markup in the output is the ``<br>``
    put back here; any other tag (``<script>``, ``<img onerror>``) stays inert.
    """
    if value is None:
        return ""
    return mark_safe(_ESCAPED_BR.sub("<br>", escape(str(value))))  # noqa: S308 - escaped above


# An audit value longer than this is shown shortened, the whole of it one
# click away (a <details> element).
AUDIT_VALUE_CHARS = 120


def _audit_text(value):
    """A recorded value as people read it: text as it is, anything else as JSON
    (true, null, [1, 2]; never Python's True, None or {'a': 1})."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


@register.filter(name="audit_items")
def audit_items(value):
    """An audit record's before or after as [{key, text, short}]: one item per
    key of an object (key None for any other value); ``short`` is the text
    shortened to AUDIT_VALUE_CHARS, or None when it is short already. The
    template escapes all of it."""
    if value is None or value == {}:
        return []
    pairs = value.items() if isinstance(value, dict) else [(None, value)]
    items = []
    for key, item in pairs:
        text = _audit_text(item)
        short = None
        if len(text) > AUDIT_VALUE_CHARS:
            short = text[: AUDIT_VALUE_CHARS - 1].rstrip() + "…"
        items.append({"key": key, "text": text, "short": short})
    return items


@register.filter(name="can")
def can(role, capability):
    """``{% if project.role|can:"export" %}``: the role table decides what a
    page offers, as it decides what the server allows."""
    return role_can(role, Capability(capability))
