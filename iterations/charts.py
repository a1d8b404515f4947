"""Charts of a regression report as inline SVG, drawn on the server.

No JavaScript library and no CDN: each function returns a small, static
``<svg>`` with a ``<title>`` and an ``aria-label``. Every text that reaches
the SVG (class names, version numbers, units) comes from the database and is
escaped here, since class names are typed by people.
"""

from __future__ import annotations

import math

from django.utils.html import escape
from django.utils.safestring import mark_safe

FONT = 'font-family="system-ui, sans-serif" font-size="12"'
GOOD, BAD, NEUTRAL, INK, GRID = "#2b8a3e", "#c92a2a", "#3b5bdb", "#1d2330", "#d9dde5"


def _svg(width, height, title, body):
    title = escape(title)
    return mark_safe(  # noqa: S308 - every text inside was escaped above or by the caller
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg" {FONT}>'
        f"<title>{title}</title>{''.join(body)}</svg>"
    )


def _text(x, y, value, *, anchor="start", extra=""):
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(value)}</text>'


def _short(value, length=18):
    value = str(value)
    return value if len(value) <= length else value[: length - 1] + "…"


def recall_deltas(per_class, *, confidence=0.95):
    """Candidate − production recall per class, in points, with CI whiskers."""
    rows = [r for r in per_class if r.get("difference") is not None]
    if not rows:
        return ""
    label_w, plot_w, row_h, top = 140, 360, 26, 28
    height = top + row_h * len(rows) + 30
    values = [
        abs(r[k]) for r in rows for k in ("difference", "low", "high") if r.get(k) is not None
    ]
    span = max(0.05, max(values)) * 100
    span = math.ceil(span / 5) * 5  # round the axis to whole 5 points

    def x(points):
        return label_w + plot_w / 2 + points / span * (plot_w / 2)

    body = [
        _text(
            label_w + plot_w / 2,
            14,
            "recall change, points (candidate − production)",
            anchor="middle",
        ),
        f'<line x1="{x(0):.1f}" y1="{top - 6}" x2="{x(0):.1f}" y2="{height - 24}" stroke="{INK}"/>',
    ]
    for tick in (-span, -span / 2, span / 2, span):
        body.append(
            f'<line x1="{x(tick):.1f}" y1="{top - 6}" x2="{x(tick):.1f}" y2="{height - 24}" '
            f'stroke="{GRID}" stroke-dasharray="3 3"/>'
        )
    for tick in (-span, 0, span):
        body.append(_text(x(tick), height - 8, f"{tick:+g}" if tick else "0", anchor="middle"))
    for i, row in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        diff = row["difference"] * 100
        low = (row.get("low") if row.get("low") is not None else row["difference"]) * 100
        high = (row.get("high") if row.get("high") is not None else row["difference"]) * 100
        colour = GOOD if low > 0 else BAD if high < 0 else NEUTRAL
        body.append(_text(label_w - 8, cy + 4, _short(row["label"]), anchor="end"))
        body.append(
            f'<line x1="{x(low):.1f}" y1="{cy:.1f}" x2="{x(high):.1f}" y2="{cy:.1f}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        for end in (low, high):
            body.append(
                f'<line x1="{x(end):.1f}" y1="{cy - 5:.1f}" x2="{x(end):.1f}" y2="{cy + 5:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        body.append(f'<circle cx="{x(diff):.1f}" cy="{cy:.1f}" r="4.5" fill="{colour}"/>')
    pct = round(confidence * 100)
    return _svg(
        label_w + plot_w + 20,
        height,
        f"Per-class recall change of the candidate against production, with {pct}% intervals",
        body,
    )


def confusion(matrix, classes, *, title):
    """A confusion matrix (rows: true class, columns: predicted), cells shaded
    by their share of the row."""
    if not matrix or not classes:
        return ""
    k = len(matrix)
    # A payload is data: never trust its class list to match the matrix.
    classes = [classes[i] if i < len(classes) else f"#{i + 1}" for i in range(k)]
    cell = max(28, min(56, 320 // k))
    left, top = 110, 70
    width, height = left + cell * k + 10, top + cell * k + 10
    body = [
        _text(left + cell * k / 2, 14, title, anchor="middle", extra='font-weight="600"'),
        _text(left + cell * k / 2, 32, "predicted →", anchor="middle", extra='fill="#667085"'),
        _text(8, top - 8, "true ↓", extra='fill="#667085"'),
    ]
    for j, name in enumerate(classes):
        body.append(_text(left + cell * j + cell / 2, top - 8, _short(name, 8), anchor="middle"))
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        body.append(
            _text(left - 6, top + cell * i + cell / 2 + 4, _short(classes[i], 14), anchor="end")
        )
        for j, count in enumerate(row):
            share = count / total
            colour = "59,91,219" if i == j else "201,42,42"
            body.append(
                f'<rect x="{left + cell * j}" y="{top + cell * i}" width="{cell - 2}" '
                f'height="{cell - 2}" fill="rgba({colour},{0.08 + 0.8 * share:.2f})"/>'
            )
            body.append(
                _text(
                    left + cell * j + cell / 2 - 1,
                    top + cell * i + cell / 2 + 4,
                    str(count),
                    anchor="middle",
                    extra=f'fill="{"#fff" if share > 0.55 else INK}"',
                )
            )
    return _svg(width, height, title, body)


def calibration(series):
    """Reliability diagram: accuracy against confidence per bin, one line per
    version; the diagonal is perfect calibration. ``series``: [(name, bins)]."""
    series = [
        (n, [b for b in bins if b.get("confidence") is not None and b.get("accuracy") is not None])
        for n, bins in series
    ]
    series = [(n, bins) for n, bins in series if bins]
    if not series:
        return ""
    size, left, top = 260, 44, 16
    colours = [NEUTRAL, "#868e96", "#e67700", "#ae3ec9", "#0c8599"]

    def px(value):
        return left + value * size

    def py(value):
        return top + (1 - value) * size

    body = [
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="{GRID}"/>',
        f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="{GRID}" '
        'stroke-dasharray="4 4"/>',
        _text(
            left + size / 2,
            top + size + 30,
            "confidence (mean top-class probability)",
            anchor="middle",
        ),
        _text(
            12,
            top + size / 2,
            "accuracy",
            anchor="middle",
            extra=f'transform="rotate(-90 12 {top + size / 2})"',
        ),
    ]
    for tick in (0, 0.5, 1):
        body.append(_text(px(tick), top + size + 14, f"{tick:g}", anchor="middle"))
        body.append(_text(left - 6, py(tick) + 4, f"{tick:g}", anchor="end"))
    for index, (name, bins) in enumerate(series):
        colour = colours[index % len(colours)]
        points = " ".join(f"{px(b['confidence']):.1f},{py(b['accuracy']):.1f}" for b in bins)
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for b in bins:
            body.append(
                f'<circle cx="{px(b["confidence"]):.1f}" cy="{py(b["accuracy"]):.1f}" r="3" '
                f'fill="{colour}"><title>{escape(name)}: {b["count"]} predictions, confidence '
                f"{b['confidence']:.2f}, accuracy {b['accuracy']:.2f}</title></circle>"
            )
        ly = top + 14 + 16 * index
        body.append(
            f'<line x1="{left + 10}" y1="{ly - 4}" x2="{left + 26}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        body.append(_text(left + 30, ly, name))
    return _svg(
        left + size + 20,
        top + size + 40,
        "Calibration: accuracy against confidence (diagonal = perfectly calibrated)",
        body,
    )


def value_over_versions(points, *, baseline=None, unit=""):
    """Value per 1,000 predictions of each version, oldest first, with the
    product manager's baseline as a dashed line. ``points``: [(label, value)]."""
    points = [(label, value) for label, value in points if value is not None]
    if not points:
        return ""
    left, top, plot_w, plot_h = 64, 24, 380, 180
    values = [v for _, v in points] + ([baseline] if baseline is not None else [])
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or abs(high) * 0.1 or 1.0
    low, high = low - pad, high + pad
    inset = 28  # keeps the first and last point and their labels off the axes
    step = (plot_w - 2 * inset) / max(1, len(points) - 1)

    def px(i):
        return left + (inset + i * step if len(points) > 1 else plot_w / 2)

    def py(value):
        return top + (high - value) / (high - low) * plot_h

    unit = f" ({unit})" if unit else ""
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="{INK}"/>',
        _text(left, 12, f"value per 1,000 predictions{unit}"),
    ]
    for tick in _nice_ticks(low, high):
        body.append(
            f'<line x1="{left}" y1="{py(tick):.1f}" x2="{left + plot_w}" y2="{py(tick):.1f}" '
            f'stroke="{GRID}"/>'
        )
        body.append(_text(left - 6, py(tick) + 4, f"{tick:,.6g}", anchor="end"))
    if baseline is not None:
        body.append(
            f'<line x1="{left}" y1="{py(baseline):.1f}" x2="{left + plot_w}" y2="{py(baseline):.1f}" '
            f'stroke="{BAD}" stroke-dasharray="5 4"/>'
        )
        body.append(
            _text(
                left + plot_w,
                py(baseline) - 5,
                f"baseline {baseline:,.1f}",
                anchor="end",
                extra=f'fill="{BAD}"',
            )
        )
    if len(points) > 1:
        line = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, (_, v) in enumerate(points))
        body.append(f'<polyline points="{line}" fill="none" stroke="{NEUTRAL}" stroke-width="2"/>')
    for i, (label, value) in enumerate(points):
        body.append(f'<circle cx="{px(i):.1f}" cy="{py(value):.1f}" r="4" fill="{NEUTRAL}"/>')
        body.append(
            _text(px(i), py(value) - 8, f"{value:,.1f}", anchor="middle", extra='font-weight="600"')
        )
        body.append(_text(px(i), top + plot_h + 16, label, anchor="middle"))
    return _svg(
        left + plot_w + 30,
        top + plot_h + 26,
        "Value per 1,000 predictions of each version, oldest first, against the baseline",
        body,
    )


def _nice_ticks(low, high, count=5):
    """Round axis values (1, 2 or 5 times a power of ten) inside [low, high]."""
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    steps = [m * power for m in (1, 2, 5, 10)]
    at = next(i for i, step in enumerate(steps) if step >= raw)

    def ticks(step):
        first = math.ceil(low / step) * step
        return [first + i * step for i in range(2 * count + 2) if first + i * step <= high]

    # A coarse step can leave a single tick (0 on -9,000..9,500): an axis
    # needs two labels at least to be read, so take the next finer step.
    while at > 0 and len(ticks(steps[at])) < 2:
        at -= 1
    return ticks(steps[at])
