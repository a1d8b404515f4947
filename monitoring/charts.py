"""Monitoring charts over time, as inline SVG drawn on the server.

Built on ``iterations.charts`` (its SVG frame, escaped text and axis ticks):
every text that reaches the SVG — class names, segment values — is escaped
there. The x axis is real time, so an hour with no predictions is a gap,
not a squeezed-out point.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils.html import escape

from iterations.charts import BAD, GRID, INK, NEUTRAL, _nice_ticks, _short, _svg, _text
from ml.drift import number

LEFT, TOP, PLOT_W, PLOT_H = 56, 30, 450, 160
PALETTE = [NEUTRAL, "#e67700", "#2b8a3e", "#ae3ec9", "#0c8599", "#868e96", "#c92a2a", "#5c940d"]
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


class _Axis:
    """Time on x (window starts, each window one slot wide), values on y."""

    def __init__(self, starts, granularity, low, high):
        self.step = STEP[granularity]
        self.t0 = min(starts)
        self.slots = max(1, int((max(starts) - self.t0) / self.step) + 1)
        self.low, self.high = low, high if high > low else low + 1
        self.granularity = granularity

    def x(self, start, *, centre=True):
        slot = (start - self.t0) / self.step + (0.5 if centre else 0)
        return LEFT + slot / self.slots * PLOT_W

    @property
    def slot_w(self):
        return PLOT_W / self.slots

    def y(self, value):
        value = min(max(value, self.low), self.high)
        return TOP + (self.high - value) / (self.high - self.low) * PLOT_H

    def frame(self, y_label, *, percent=False):
        body = [
            _text(LEFT, 14, y_label, extra='font-weight="600"'),
            f'<line x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{LEFT + PLOT_W}" y2="{TOP + PLOT_H}" '
            f'stroke="{INK}"/>',
        ]
        for tick in _nice_ticks(self.low, self.high, 4):
            body.append(
                f'<line x1="{LEFT}" y1="{self.y(tick):.1f}" x2="{LEFT + PLOT_W}" '
                f'y2="{self.y(tick):.1f}" stroke="{GRID}"/>'
            )
            label = f"{tick:.0%}" if percent else f"{tick:,.6g}"
            if "e" in label:  # 5e-05: small thresholds are written out
                label = number(tick)
            body.append(_text(LEFT - 6, self.y(tick) + 4, label, anchor="end"))
        # Dates on whole days (midnight UTC), at most eight of them.
        first_day = self.t0.replace(hour=0, minute=0, second=0, microsecond=0)
        if first_day < self.t0:
            first_day += timedelta(days=1)
        last = self.t0 + self.slots * self.step
        days = [first_day + timedelta(days=i) for i in range((last - first_day).days + 1)]
        days = [d for d in days if d < last] or [self.t0]
        every = -(-len(days) // 8)
        for day in days[::every]:
            x = self.x(day, centre=self.granularity == "day")
            if x <= LEFT + PLOT_W - 18:  # a label past the edge would be cut
                body.append(
                    f'<line x1="{x:.1f}" y1="{TOP + PLOT_H}" x2="{x:.1f}" y2="{TOP + PLOT_H + 4}" '
                    f'stroke="{INK}"/>'
                )
                body.append(_text(x, TOP + PLOT_H + 16, day.strftime("%b %d"), anchor="middle"))
        return body


# Text is ~7 px a character at the charts' font size.
CHAR_W = 7
# The legend's first row when it does not fit beside the chart's label: under the dates.
LEGEND_BELOW = TOP + PLOT_H + 38
LEGEND_ROW = 18
# A legend entry is cut only past this many characters (a class name, say):
# every measure and "alert above <threshold>" fits whole.
LEGEND_CHARS = 40


def _legend_width(name):
    return 14 + CHAR_W * len(_short(name, LEGEND_CHARS)) + 12


def _legend_rows(items, width):
    """The legend's entries in rows of at most ``width`` px, in order."""
    rows, used = [[]], 0
    for item in items:
        w = _legend_width(item[0])
        if rows[-1] and used + w > width:
            rows.append([])
            used = 0
        rows[-1].append(item)
        used += w
    return rows


def _legend_y(items, label):
    """The legend's row: beside the label (top right) when both fit,
    otherwise under the x axis (``_finish(..., legend_below=...)``)."""
    left = LEFT + PLOT_W - sum(_legend_width(name) for name, _, _ in items)
    return 14 if left >= LEFT + CHAR_W * len(label) + 12 else LEGEND_BELOW


def _legend(items, y=14):
    """The legend, right-aligned; under the chart it wraps onto as many rows
    as it needs across the whole width (``_finish`` makes room for them)."""
    rows = [items] if y != LEGEND_BELOW else _legend_rows(items, LEFT + PLOT_W)
    body = []
    for number_, row in enumerate(rows):
        x, row_y = LEFT + PLOT_W, y + number_ * LEGEND_ROW
        for name, colour, dashed in reversed(row):
            x -= _legend_width(name)
            dash = ' stroke-dasharray="5 4"' if dashed else ""
            body.append(
                f'<line x1="{x}" y1="{row_y - 4}" x2="{x + 12}" y2="{row_y - 4}" '
                f'stroke="{colour}" stroke-width="3"{dash}/>'
            )
            body.append(_text(x + 16, row_y, _short(name, LEGEND_CHARS)))
    return body


def _finish(title, body, *, legend_below=False, legend_items=()):
    """The SVG, tall enough for a legend under the chart (``legend_items``:
    its entries, when it wraps onto more than one row)."""
    rows = len(_legend_rows(legend_items, LEFT + PLOT_W)) if legend_items else 1
    height = TOP + PLOT_H + (46 + (rows - 1) * LEGEND_ROW if legend_below else 26)
    return _svg(LEFT + PLOT_W + 16, height, title, body)


def volume(points, granularity):
    """Predictions per window as bars. ``points``: [(start, n)]."""
    if not points:
        return ""
    # At least 0..5, so that a handful of predictions gets whole-number ticks.
    axis = _Axis([s for s, _ in points], granularity, 0, max(5, max(n for _, n in points) * 1.1))
    body = axis.frame(f"predictions per {granularity}")
    width = max(1.0, axis.slot_w * 0.8)
    for start, n in points:
        x = axis.x(start) - width / 2
        body.append(
            f'<rect x="{x:.1f}" y="{axis.y(n):.1f}" width="{width:.1f}" '
            f'height="{axis.y(0) - axis.y(n):.1f}" fill="{NEUTRAL}">'
            f"<title>{start:%Y-%m-%d %H:00}: {n:,} predictions</title></rect>"
        )
    return _finish(f"Predictions per {granularity}", body)


def _line(axis, points, colour, *, dashed=False, width=2):
    """A polyline broken wherever a window is missing (no point drawn across a gap)."""
    out, run, previous = [], [], None
    for start, value in points:
        if value is None or (previous is not None and start - previous > axis.step):
            if len(run) > 1:
                out.append(run)
            run = [] if value is None else [(start, value)]
        else:
            run.append((start, value))
        previous = start if value is not None else None
    if len(run) > 1:
        out.append(run)
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    body = []
    for segment in out:
        line = " ".join(f"{axis.x(s):.1f},{axis.y(v):.1f}" for s, v in segment)
        body.append(
            f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="{width}"{dash}/>'
        )
    for start, value in points:  # lone points (no neighbour) still show
        if value is not None:
            body.append(
                f'<circle cx="{axis.x(start):.1f}" cy="{axis.y(value):.1f}" r="2" fill="{colour}"/>'
            )
    return body


def _band(axis, points, colour):
    """A shaded interval: ``points`` [(start, (low, high) or None)]."""
    body = []
    for start, interval in points:
        if interval is None:
            continue
        low, high = interval
        x = axis.x(start) - axis.slot_w / 2
        body.append(
            f'<rect x="{x:.1f}" y="{axis.y(high):.1f}" width="{axis.slot_w:.1f}" '
            f'height="{max(0.5, axis.y(low) - axis.y(high)):.1f}" fill="{colour}" '
            'fill-opacity="0.18"/>'
        )
    return body


def accuracy(points, granularity):
    """Accuracy with its 95% interval (shaded), and ground-truth coverage
    (dashed). ``points``: [(start, accuracy, (low, high), coverage)]."""
    if not any(a is not None for _, a, _, _ in points):
        return ""
    axis = _Axis([p[0] for p in points], granularity, 0, 1)
    body = axis.frame("accuracy and coverage", percent=True)
    body += _band(axis, [(s, ci) for s, _, ci, _ in points], NEUTRAL)
    body += _line(axis, [(s, a) for s, a, _, _ in points], NEUTRAL)
    body += _line(axis, [(s, c) for s, _, _, c in points], "#868e96", dashed=True)
    body += _legend([("accuracy", NEUTRAL, False), ("coverage", "#868e96", True)])
    return _finish(f"Accuracy per {granularity} with its interval, and ground-truth coverage", body)


def class_shares(points, granularity):
    """Predicted-class shares per window, stacked to 100%.
    ``points``: [(start, {class: share})]."""
    if not points:
        return ""
    classes = sorted({c for _, shares in points for c in shares})
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    axis = _Axis([s for s, _ in points], granularity, 0, 1)
    body = axis.frame("predicted-class share", percent=True)
    width = max(1.0, axis.slot_w * 0.9)
    for start, shares in points:
        bottom = 0.0
        for name in classes:
            share = shares.get(name, 0)
            if not share:
                continue
            body.append(
                f'<rect x="{axis.x(start) - width / 2:.1f}" y="{axis.y(bottom + share):.1f}" '
                f'width="{width:.1f}" height="{axis.y(bottom) - axis.y(bottom + share):.1f}" '
                f'fill="{colours[name]}"><title>{start:%Y-%m-%d %H:00} {escape(name)}: '
                f"{share:.1%}</title></rect>"
            )
            bottom += share
    items = [(c, colours[c], False) for c in classes[:6]]
    y = _legend_y(items, "predicted-class share")
    body += _legend(items, y)
    title = f"Share of each predicted class per {granularity}"
    return _finish(title, body, legend_below=y == LEGEND_BELOW, legend_items=items)


def latency(points, granularity):
    """p50 and p95 latency. ``points``: [(start, p50, p95)] in ms."""
    values = [v for _, a, b in points for v in (a, b) if v is not None and v != float("inf")]
    if not values:
        return ""
    axis = _Axis([p[0] for p in points], granularity, 0, max(values) * 1.1)
    body = axis.frame("latency, ms")
    body += _line(axis, [(s, a) for s, a, _ in points], NEUTRAL)
    body += _line(axis, [(s, b) for s, _, b in points], "#e67700")
    body += _legend([("p50", NEUTRAL, False), ("p95", "#e67700", False)])
    return _finish(f"Latency per {granularity}: median and 95th percentile", body)


def value(points, granularity, *, baseline=None, unit=""):
    """Value per 1,000 predictions with its 95% interval and the baseline to
    beat. ``points``: [(start, value, (low, high) or None)]."""
    if not any(v is not None for _, v, _ in points):
        return ""
    values = [v for _, v, _ in points if v is not None]
    values += [x for _, _, ci in points if ci for x in ci]
    values += [baseline] if baseline is not None else []
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    axis = _Axis([p[0] for p in points], granularity, low - pad, high + pad)
    unit = f" ({unit})" if unit else ""
    label = f"value per 1,000{unit}"
    body = axis.frame(label)
    body += _band(axis, [(s, ci) for s, _, ci in points], NEUTRAL)
    body += _line(axis, [(s, v) for s, v, _ in points], NEUTRAL)
    items = [("value", NEUTRAL, False)]
    if baseline is not None:
        body.append(
            f'<line x1="{LEFT}" y1="{axis.y(baseline):.1f}" x2="{LEFT + PLOT_W}" '
            f'y2="{axis.y(baseline):.1f}" stroke="{BAD}" stroke-dasharray="5 4"/>'
        )
        items.append((f"baseline {baseline:,.0f}", BAD, True))
    y = _legend_y(items, label)
    body += _legend(items, y)
    title = f"Value per 1,000 predictions per {granularity}, against the baseline"
    return _finish(title, body, legend_below=y == LEGEND_BELOW, legend_items=items)


def drift(series, *, period=None, granularity="day"):
    """One drift measure of one field over time, with its alert threshold.
    ``series``: an item of ``selectors.drift_series``. Each check is drawn
    across the window of logs it read (a check of two weeks is a line two
    weeks long, not a point at its start), with a dot at the window's end
    where its value is known; ``period`` (start, end) is the page's, the
    windows clipped to it; without one, the checks' own span."""
    checks = [
        (p["window_start"], p["window_end"], p["value"])
        for p in series["points"]
        if p.get("window_end") is not None
    ]
    if not checks:
        return ""
    start, end = period or (min(c[0] for c in checks), max(c[1] for c in checks))
    step = STEP[granularity]
    threshold = series.get("threshold")
    values = [v for _, _, v in checks] + ([threshold] if threshold is not None else [])
    axis = _Axis([start, max(start, end - step)], granularity, 0, max(max(values) * 1.15, 1e-6))
    name = f"{series['field']} · {series['measure']}"
    body = axis.frame(name)
    left, right = LEFT, LEFT + PLOT_W
    for window_start, window_end, value in checks:
        x1 = min(max(axis.x(window_start, centre=False), left), right)
        x2 = min(max(axis.x(window_end, centre=False), left), right)
        y = axis.y(value)
        tip = (
            f"<title>{window_start:%Y-%m-%d %H:%M} to {window_end:%Y-%m-%d %H:%M} UTC: "
            f"{number(value)}</title>"
        )
        body.append(
            f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{max(x2, x1 + 1):.1f}" y2="{y:.1f}" '
            f'stroke="{NEUTRAL}" stroke-width="3">{tip}</line>'
        )
        body.append(f'<circle cx="{x2:.1f}" cy="{y:.1f}" r="3" fill="{NEUTRAL}">{tip}</circle>')
    items = [(series["measure"], NEUTRAL, False)]
    if threshold is not None:
        body.append(
            f'<line x1="{LEFT}" y1="{axis.y(threshold):.1f}" x2="{LEFT + PLOT_W}" '
            f'y2="{axis.y(threshold):.1f}" stroke="{BAD}" stroke-dasharray="5 4"/>'
        )
        items.append((f"alert above {number(threshold)}", BAD, True))
    y = _legend_y(items, name)
    body += _legend(items, y)
    title = f"Drift of {name}: each check across the window of logs it read"
    return _finish(title, body, legend_below=y == LEGEND_BELOW, legend_items=items)
