"""Template filters for untrusted sample text."""

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

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
