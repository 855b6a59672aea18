"""The page at ``/``: what the daemon knows, drawn for people.

Per root: a header (path, state, last scan, duration, size, unreadable entries), a squarified
treemap of the level-1 directories by disk usage, the scan history as two small inline SVG
charts (size and duration), and a table of the largest directories. Then the latest jobs.

Everything is rendered here, on the server: HTML with inline CSS and inline SVG, no script, no
font, no asset from anywhere (``CONTENT_SECURITY_POLICY``, sent with the page, forbids them all).
Every name is shown through ``display_path`` and escaped. Treemap cells and table rows carry
``data-path`` (the ``display_path`` of the directory, as in ``/metrics``) and ``data-bytes``
(exact disk usage) for tests and for anyone scraping the page.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass

from diskaudit import __version__
from diskaudit.exporter.state import RootStatus, ScanRecord, Snapshot
from diskaudit.jobs.model import Job, Status
from diskaudit.render import display_path, human_bytes
from diskaudit.scan.model import DirUsage

#: Sent with the page: nothing but the page itself, its inline styles and inline SVG.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

#: Level-1 directories drawn one by one; the rest share one cell.
TREEMAP_CELLS = 30
#: The treemap box is the content width by TREEMAP_HEIGHT_PX; the layout is computed for a box
#: of about this width / height (it stretches with the window: cells stay proportional in area
#: only at this ratio, and close to it otherwise).
TREEMAP_WIDTH_PX = 1120
TREEMAP_HEIGHT_PX = 340
#: Largest directories listed per root.
TABLE_ROWS = 15
#: Characters of a job error shown (the whole error is in the title).
ERROR_CHARS = 240

_BADGE = {
    Status.QUEUED: "queued",
    Status.RUNNING: "running",
    Status.SUCCEEDED: "ok",
    Status.FAILED: "bad",
    Status.TIMED_OUT: "warn",
    Status.CANCELLED: "muted",
}


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def shown(path: str) -> str:
    """A path (or any text holding names) for HTML: printable, then escaped."""
    return esc(display_path(path))


# --- squarified treemap ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rect:
    """A cell, in fractions (0..1) of the treemap box."""

    x: float
    y: float
    w: float
    h: float


def squarify(values: Sequence[float], aspect: float = 1.0) -> list[Rect]:
    """The squarified treemap (Bruls, Huizing, van Wijk 2000) of ``values`` in a box ``aspect``
    times as wide as high: one rectangle per value, in the order given, with areas
    proportional to the values. ``values`` should be positive and sorted largest first (the
    algorithm's assumption for squarish cells); an empty or zero-sum input gives no cells."""
    total = float(sum(values))
    if not values or total <= 0 or aspect <= 0:
        return []
    areas = [max(float(v), 0.0) * aspect / total for v in values]  # the box's area is aspect
    cells: list[Rect] = []
    box = (0.0, 0.0, aspect, 1.0)
    row: list[float] = []
    for area in areas:
        side = min(box[2], box[3])
        if row and _worst([*row, area], side) > _worst(row, side):
            box = _lay_out(row, box, cells)
            row = []
        row.append(area)
    if row:
        _lay_out(row, box, cells)
    return [Rect(c.x / aspect, c.y, c.w / aspect, c.h) for c in cells]


def _worst(row: Sequence[float], side: float) -> float:
    """The worst aspect ratio of the cells of ``row`` laid along a side of length ``side``."""
    s = sum(row)
    if s <= 0 or side <= 0:
        return float("inf")
    return max(
        max(side * side * r / (s * s), (s * s) / (side * side * r)) if r > 0 else 1.0 for r in row
    )


def _lay_out(
    row: Sequence[float], box: tuple[float, float, float, float], cells: list[Rect]
) -> tuple[float, float, float, float]:
    """Lay ``row`` along the shorter side of ``box``; returns what is left of the box."""
    x, y, w, h = box
    s = sum(row)
    if w >= h:  # a column on the left
        cw = s / h if h > 0 else 0.0
        cy = y
        for r in row:
            rh = r / cw if cw > 0 else 0.0
            cells.append(Rect(x, cy, cw, rh))
            cy += rh
        return (x + cw, y, max(w - cw, 0.0), h)
    rh = s / w if w > 0 else 0.0  # a row at the top
    cx = x
    for r in row:
        rw = r / rh if rh > 0 else 0.0
        cells.append(Rect(cx, y, rw, rh))
        cx += rw
    return (x, y + rh, w, max(h - rh, 0.0))


# --- formatting ------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _ago(ts: float, now: float) -> str:
    s = max(now - ts, 0.0)
    if s < 5:
        return "just now"
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 90 * 60:
        return f"{s / 60:.0f} min ago"
    if s < 36 * 3600:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def _time(ts: float | None, now: float) -> str:
    """A <time> showing how long ago, with the local time as its title."""
    if ts is None:
        return '<span class="dim">—</span>'
    return f'<time title="{esc(_when(ts))}">{esc(_ago(ts, now))}</time>'


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def _count(n: int) -> str:
    return f"{n:,}".replace(",", "\u202f")  # narrow no-break space between thousands


def _pct(x: float) -> str:
    return f"{min(max(x * 100, 0.0), 100.0):.4f}%"


def _relative(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def _share(part: int, whole: int) -> str:
    if whole <= 0:
        return "—"
    p = part * 100 / whole
    return f"{p:.1f}%" if p < 10 else f"{p:.0f}%"


# --- the page --------------------------------------------------------------------------------


def render_page(
    snap: Snapshot,
    jobs: Sequence[Job] | None = None,
    *,
    implementation: str | None = None,
    now: float | None = None,
) -> str:
    """The whole page. ``jobs``: the latest jobs, newest first; None leaves the section out
    (no job store)."""
    now = time.time() if now is None else now
    roots = "\n".join(_root_section(r, i, now) for i, r in enumerate(snap.roots))
    if not snap.roots:
        roots = '<section class="card"><p class="dim">No roots configured.</p></section>'
    jobs_html = "" if jobs is None else _jobs_section(jobs, now)
    reader = f" · {esc(implementation)} reader" if implementation else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta http-equiv="refresh" content="60">
<title>diskaudit</title>
<style>{_CSS}</style></head>
<body>
<header class="top">
<div class="brand"><span class="logo" aria-hidden="true"></span>diskaudit
<span class="ver">{esc(__version__)}{reader}</span></div>
<nav><a href="metrics">Metrics</a><a href="healthz">Health</a><a href="readyz">Readiness</a>
<a href="version">Version</a><a href="api/v1/jobs">Jobs API</a></nav>
</header>
<main>
{_summary(snap, jobs, now)}
{roots}
{jobs_html}
<footer>Values come from the last background scan; the page reloads every minute.
Rendered {esc(_when(now))}.</footer>
</main>
</body></html>
"""


def _summary(snap: Snapshot, jobs: Sequence[Job] | None, now: float) -> str:
    ok = sum(1 for r in snap.roots if r.last_ok)
    failed = sum(1 for r in snap.roots if r.last_ok is False)
    pending = len(snap.roots) - ok - failed
    total = sum(r.usage.total.disk_bytes for r in snap.roots if r.usage and r.usage.entries)
    dirs = sum(len(r.usage.entries) for r in snap.roots if r.usage)
    attempts = [r.last_attempt_s for r in snap.roots if r.last_attempt_s is not None]
    states = [f'<span class="ok-t">{ok} ok</span>']
    if failed:
        states.append(f'<span class="bad-t">{failed} failed</span>')
    if pending:
        states.append(f"{pending} waiting")
    tiles = [
        ("Roots", str(len(snap.roots)), " · ".join(states)),
        ("Disk usage", esc(human_bytes(total)), f"{_count(dirs)} directories measured"),
        (
            "Last scan",
            _time(max(attempts), now) if attempts else "never",
            esc(_when(max(attempts))) if attempts else "",
        ),
    ]
    if jobs is not None:
        running = sum(1 for j in jobs if j.status is Status.RUNNING)
        queued = sum(1 for j in jobs if j.status is Status.QUEUED)
        tiles.append(("Jobs", str(len(jobs)), f"{running} running · {queued} queued (latest)"))
    cells = "".join(
        f'<div class="tile"><div class="k">{k}</div><div class="v">{v}</div>'
        f'<div class="s">{s}</div></div>'
        for k, v, s in tiles
    )
    return f'<section class="tiles">{cells}</section>'


def _root_section(r: RootStatus, index: int, now: float) -> str:
    usage = r.usage
    state, badge = {None: ("waiting", "queued"), True: ("ok", "ok"), False: ("failed", "bad")}[
        r.last_ok
    ]
    facts = [
        f"<div><dt>Last scan</dt><dd>{_time(r.last_attempt_s, now)}</dd></div>",
        f"<div><dt>Duration</dt><dd>{esc(_duration(r.last_duration_s))}</dd></div>",
    ]
    if usage is not None and usage.entries:
        t = usage.total
        facts += [
            f'<div><dt>Size</dt><dd class="big" data-bytes="{t.disk_bytes}">'
            f"{esc(human_bytes(t.disk_bytes))}</dd></div>",
            f"<div><dt>Apparent</dt><dd>{esc(human_bytes(t.apparent_bytes))}</dd></div>",
            f"<div><dt>Files</dt><dd>{_count(t.files)}</dd></div>",
            f"<div><dt>Directories</dt><dd>{_count(t.dirs)}</dd></div>",
            f'<div><dt>Unreadable</dt><dd class="{"bad-t" if usage.errors else ""}">'
            f"{_count(usage.errors)}</dd></div>",
        ]
    alerts = ""
    if r.last_error:
        kept = " Showing the last successful scan." if usage is not None else ""
        alerts += (
            f'<p class="alert">Last attempt failed: {shown(r.last_error)}'
            f'<span class="dim">{kept}</span></p>'
        )
    if usage is not None and usage.error_samples:
        samples = "".join(f"<li>{shown(s)}</li>" for s in usage.error_samples)
        alerts += (
            f'<details class="samples"><summary>{_count(usage.errors)} unreadable entries '
            f"skipped</summary><ul>{samples}</ul></details>"
        )
    if usage is not None and usage.entries:
        body = (
            f"{_treemap(r, usage.entries)}"
            f'<div class="split">{_history(r.history)}{_largest(r, usage.entries)}</div>'
        )
    else:
        body = '<p class="empty">No successful scan yet.</p>'
        if r.history:
            body += f'<div class="split">{_history(r.history)}</div>'
    return f"""<section class="card root" id="root-{index}" data-root="{shown(r.spec.path)}">
<div class="root-head"><h2 title="{shown(r.spec.path)}">{shown(r.spec.path)}</h2>
<span class="badge {badge}">{state}</span>
<span class="dim">dir-level {r.spec.dir_level}</span></div>
<dl class="facts">{"".join(facts)}</dl>
{alerts}
{body}
</section>"""


def _treemap(r: RootStatus, entries: Sequence[DirUsage]) -> str:
    total = entries[0].disk_bytes
    level1 = sorted((e for e in entries if e.level == 1), key=lambda e: (-e.disk_bytes, e.path))
    if not level1:
        return '<p class="empty">No subdirectories measured (dir-level 0, or none here).</p>'
    drawn = [e for e in level1 if e.disk_bytes > 0][: TREEMAP_CELLS - 1]
    rest = [e for e in level1 if e.disk_bytes > 0][TREEMAP_CELLS - 1 :]
    if len(rest) == 1:
        drawn, rest = [*drawn, *rest], []
    empty = sum(1 for e in level1 if e.disk_bytes == 0)
    # (label, title, bytes, attributes, css class)
    items: list[tuple[str, str, int, str, str]] = [
        (
            shown(_relative(e.path, r.spec.path)),
            shown(e.path),
            e.disk_bytes,
            f'data-path="{shown(e.path)}" data-level="1"',
            "",
        )
        for e in drawn
    ]
    if rest:
        rest_bytes = sum(e.disk_bytes for e in rest)
        items.append(
            (
                f"{len(rest)} more",
                f"{len(rest)} smaller directories",
                rest_bytes,
                f'data-rest="{len(rest)}"',
                " more",
            )
        )
    here = total - sum(e.disk_bytes for e in level1)
    if here > 0:
        items.append(
            ("files here", f"files directly in {shown(r.spec.path)}", here, "data-here", " here")
        )
    items.sort(key=lambda i: -i[2])
    rects = squarify([i[2] for i in items], TREEMAP_WIDTH_PX / TREEMAP_HEIGHT_PX)
    cells = []
    for n, ((label, title, size, attrs, cls), rect) in enumerate(zip(items, rects, strict=True)):
        wpx, hpx = rect.w * TREEMAP_WIDTH_PX, rect.h * TREEMAP_HEIGHT_PX
        if wpx < 46 or hpx < 38:
            fit = " tiny"
        elif wpx < 110 or hpx < 52:
            fit = " small"
        else:
            fit = " large" if wpx > 280 and hpx > 150 else ""
        hue = (205 + n * 137.508) % 360
        human = esc(human_bytes(size))
        cells.append(
            f'<div class="cell{cls}{fit}" {attrs} data-bytes="{size}" '
            f'style="left:{_pct(rect.x)};top:{_pct(rect.y)};width:{_pct(rect.w)};'
            f'height:{_pct(rect.h)};--h:{hue:.0f}" '
            f'title="{title} — {human} ({_share(size, total)})">'
            f'<span class="name">{label}</span><span class="size">{human}</span></div>'
        )
    note = f" · {empty} empty not shown" if empty else ""
    return (
        f'<h3>Largest directories <span class="dim">level 1, by disk usage · '
        f"{len(level1)} directories{note}</span></h3>"
        f'<div class="treemap" role="img" aria-label="treemap of the level-1 directories">'
        f"{''.join(cells)}</div>"
    )


def _history(history: Sequence[ScanRecord]) -> str:
    if not history:
        return '<div class="history"><h3>Scan history</h3><p class="dim">No scans yet.</p></div>'
    ok = [h for h in history if h.ok and h.disk_bytes is not None]
    failed = len(history) - sum(1 for h in history if h.ok)
    n = len(history)
    width, height = 300.0, 64.0
    step = width / n
    # Duration: one bar per attempt (failed ones red, full height: they stand out).
    longest = max(h.duration_s for h in history)
    # Scaled to the longest successful scan: a failure (a timeout, say) would flatten the rest.
    scale = max((h.duration_s for h in history if h.ok), default=0.0) or 1.0
    bars = []
    for i, h in enumerate(history):
        bh = height if not h.ok else max(min(h.duration_s / scale, 1.0) * (height - 4), 1.5)
        what = (
            f"{_when(h.ended_s)} · {_duration(h.duration_s)}"
            + (f" · {human_bytes(h.disk_bytes)}" if h.disk_bytes is not None else "")
            + ("" if h.ok else " · failed")
        )
        bars.append(
            f'<rect class="{"bar" if h.ok else "fail"}" x="{i * step + step * 0.15:.2f}" '
            f'y="{height - bh:.2f}" width="{step * 0.7:.2f}" height="{bh:.2f}">'
            f"<title>{esc(what)}</title></rect>"
        )
    durations = (
        f'<svg class="spark" viewBox="0 0 {width:.0f} {height:.0f}" preserveAspectRatio="none" '
        f'role="img" aria-label="scan durations">{"".join(bars)}</svg>'
    )
    # Size: a line over the successful scans, scaled between their min and max.
    size_svg = '<p class="dim">No successful scan yet.</p>'
    size_caption = ""
    if ok:
        lo = min(h.disk_bytes or 0 for h in ok)
        hi = max(h.disk_bytes or 0 for h in ok)
        span = hi - lo
        points = []
        for i, h in enumerate(history):
            if h.ok and h.disk_bytes is not None:
                frac = 0.5 if span == 0 else (h.disk_bytes - lo) / span
                points.append((i * step + step / 2, height - 6 - frac * (height - 12)))
        if len(points) == 1:
            points = [(0.0, points[0][1]), (width, points[0][1])]
        line = " ".join(f"{x:.2f},{y:.2f}" for x, y in points)
        area = f"{points[0][0]:.2f},{height:.0f} {line} {points[-1][0]:.2f},{height:.0f}"
        size_svg = (
            f'<svg class="spark" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'preserveAspectRatio="none" role="img" aria-label="total size per scan">'
            f'<polygon class="area" points="{area}"/>'
            f'<polyline class="line" points="{line}"/></svg>'
        )
        last = ok[-1].disk_bytes or 0
        size_caption = (
            f"last {esc(human_bytes(last))} · min {esc(human_bytes(lo))} · "
            f"max {esc(human_bytes(hi))}"
        )
    dur_caption = f"last {esc(_duration(history[-1].duration_s))} · max {esc(_duration(longest))}"
    failures = f' · <span class="bad-t">{failed} failed</span>' if failed else ""
    return f"""<div class="history"><h3>Scan history <span class="dim">last {n} \
scan{"s" if n != 1 else ""}{failures}</span></h3>
<div class="chart"><div class="label">Size</div>{size_svg}<div class="cap">{size_caption}</div>
</div>
<div class="chart"><div class="label">Duration</div>{durations}<div class="cap">{dur_caption}</div>
</div>
<div class="cap">{_time_span(history)}</div></div>"""


def _time_span(history: Sequence[ScanRecord]) -> str:
    first, last = history[0].ended_s, history[-1].ended_s
    return f"{esc(_when(first))} → {esc(_when(last))}" if len(history) > 1 else esc(_when(last))


def _largest(r: RootStatus, entries: Sequence[DirUsage]) -> str:
    total = entries[0].disk_bytes
    deeper = sorted((e for e in entries if e.level >= 1), key=lambda e: (-e.disk_bytes, e.path))
    if not deeper:
        return ""
    rows = []
    for e in deeper[:TABLE_ROWS]:
        rel = _relative(e.path, r.spec.path)
        head, _, tail = rel.rpartition("/")
        name = (f'<span class="dim">{shown(head)}/</span>' if head else "") + shown(tail)
        share = e.disk_bytes / total if total > 0 else 0.0
        rows.append(
            f'<tr data-path="{shown(e.path)}" data-bytes="{e.disk_bytes}">'
            f'<td class="path" title="{shown(e.path)}">{name}</td>'
            f'<td class="num">{e.level}</td>'
            f'<td class="num size">{esc(human_bytes(e.disk_bytes))}</td>'
            f'<td class="num dim">{esc(human_bytes(e.apparent_bytes))}</td>'
            f'<td class="num">{_count(e.files)}</td>'
            f'<td class="share"><span class="meter"><span style="width:{_pct(share)}">'
            f"</span></span>{_share(e.disk_bytes, total)}</td></tr>"
        )
    more = (
        f'<p class="dim">{len(deeper) - TABLE_ROWS} more not listed (see /metrics).</p>'
        if len(deeper) > TABLE_ROWS
        else ""
    )
    levels = "level 1" if r.spec.dir_level <= 1 else f"levels 1&ndash;{r.spec.dir_level}"
    return f"""<div class="largest"><h3>Largest directories <span class="dim">{levels}\
</span></h3>
<table><thead><tr><th>Directory</th><th class="num">Level</th><th class="num">Disk</th>
<th class="num">Apparent</th><th class="num">Files</th><th>Share</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>{more}</div>"""


def _jobs_section(jobs: Sequence[Job], now: float) -> str:
    if not jobs:
        body = '<p class="empty">No jobs yet. Submit one with <code>POST /api/v1/jobs</code>.</p>'
    else:
        rows = "".join(_job_row(j, now) for j in jobs)
        body = f"""<table class="jobs"><thead><tr><th>Job</th><th>Repository</th><th>Ref</th>
<th>Status</th><th class="num">Attempts</th><th>Created</th><th>Started</th><th>Took</th>
<th>Error</th></tr></thead><tbody>{rows}</tbody></table>"""
    return f"""<section class="card" id="jobs"><h2>Jobs <span class="dim">latest \
{len(jobs)}</span></h2>
{body}</section>"""


def _job_row(j: Job, now: float) -> str:
    took = (
        _duration(j.finished_at - j.started_at)
        if j.finished_at is not None and j.started_at is not None
        else "…"
        if j.status is Status.RUNNING
        else "—"
    )
    error = ""
    if j.error:
        text = display_path(j.error)
        cut = text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"
        error = f'<span class="err" title="{esc(text)}">{esc(cut)}</span>'
    ref = shown(j.ref) if j.ref else '<span class="dim">default</span>'
    cancel = ' <span class="dim">(cancelling)</span>' if j.cancel_requested else ""
    return (
        f'<tr data-job-id="{esc(j.id)}" data-status="{esc(j.status.value)}">'
        f'<td><code title="{esc(j.id)}">{esc(j.id[:8])}</code></td>'
        f'<td class="url">{shown(j.url)}</td><td>{ref}</td>'
        f'<td><span class="badge {_BADGE[j.status]}">{esc(j.status.value)}</span>{cancel}</td>'
        f'<td class="num">{j.attempts}</td><td class="t">{_time(j.created_at, now)}</td>'
        f'<td class="t">{_time(j.started_at, now)}</td><td class="t">{esc(took)}</td>'
        f"<td>{error}</td></tr>"
    )


_CSS = """
:root {
  --bg: #f4f5f7; --card: #ffffff; --fg: #1d2330; --dim: #6b7280; --line: #e3e6eb;
  --accent: #2f6fdf; --ok: #1a7f4b; --ok-bg: #e3f5ea; --bad: #c0352b; --bad-bg: #fde8e6;
  --warn: #a35d00; --warn-bg: #fff1d6; --run: #1f5fbf; --run-bg: #e2ecfb;
  --muted-bg: #eceef1; --cell-l: 42%; --cell-s: 42%; --meter: #dfe3ea;
  --mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #12151b; --card: #1b2029; --fg: #e4e7ec; --dim: #8f98a8; --line: #2b3240;
    --accent: #6aa1ff; --ok: #4cc38a; --ok-bg: #173528; --bad: #ff7b72; --bad-bg: #3d1d1b;
    --warn: #f0b45a; --warn-bg: #3a2c14; --run: #7fb0ff; --run-bg: #1c2b45;
    --muted-bg: #262c37; --cell-l: 34%; --cell-s: 38%; --meter: #2b3240;
  }
}
* { box-sizing: border-box; }
html { background: var(--bg); color: var(--fg); }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans",
  sans-serif; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
code { font-family: var(--mono); font-size: 12.5px; }
.top { display: flex; align-items: center; justify-content: space-between; gap: 1rem;
  flex-wrap: wrap; padding: .7rem 1.5rem; background: var(--card);
  border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; font-size: 17px; display: flex; align-items: center; gap: .5rem; }
.logo { width: 18px; height: 18px; border-radius: 4px; display: inline-block;
  background: linear-gradient(135deg, #2f6fdf 0 50%, #1a9f6b 50% 75%, #e0a030 75%); }
.ver { font-weight: 400; color: var(--dim); font-size: 13px; }
nav { display: flex; gap: 1.1rem; flex-wrap: wrap; }
main { max-width: 1200px; margin: 0 auto; padding: 1.2rem 1.5rem 2rem; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr));
  gap: .9rem; margin-bottom: 1rem; }
.tile, .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; }
.tile { padding: .75rem 1rem; }
.tile .k { color: var(--dim); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.tile .v { font-size: 24px; font-weight: 650; margin: .1rem 0; }
.tile .s { color: var(--dim); font-size: 12.5px; }
.card { padding: 1.1rem 1.25rem 1.25rem; margin-bottom: 1rem; }
h2 { font-size: 18px; margin: 0; font-family: var(--mono); font-weight: 600;
  overflow-wrap: anywhere; white-space: pre-wrap; }
#jobs h2 { font-family: inherit; margin-bottom: .7rem; }
h3 { font-size: 13px; margin: 1.1rem 0 .5rem; font-weight: 600; }
h3 .dim, h2 .dim { font-weight: 400; }
.dim { color: var(--dim); }
.root-head { display: flex; align-items: center; gap: .7rem; flex-wrap: wrap; }
.facts { display: flex; flex-wrap: wrap; gap: .4rem 2rem; margin: .8rem 0 0; }
.facts div { min-width: 80px; }
.facts dt { color: var(--dim); font-size: 12px; }
.facts dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
.facts dd.big { font-size: 18px; line-height: 1.2; }
.badge { display: inline-block; padding: .08rem .55rem; border-radius: 99px; font-size: 12px;
  font-weight: 600; font-family: inherit; white-space: nowrap; }
.badge.ok { color: var(--ok); background: var(--ok-bg); }
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.badge.warn { color: var(--warn); background: var(--warn-bg); }
.badge.running { color: var(--run); background: var(--run-bg); }
.badge.queued, .badge.muted { color: var(--dim); background: var(--muted-bg); }
.badge.running::before { content: ""; display: inline-block; width: 7px; height: 7px;
  border-radius: 50%; background: currentColor; margin-right: .35rem; vertical-align: 1px;
  animation: pulse 1.2s ease-in-out infinite; }
@keyframes pulse { 50% { opacity: .25; } }
.ok-t { color: var(--ok); } .bad-t { color: var(--bad); }
.alert { margin: .8rem 0 0; padding: .55rem .8rem; border-radius: 8px; color: var(--bad);
  background: var(--bad-bg); white-space: pre-wrap; overflow-wrap: anywhere; }
.samples { margin-top: .6rem; color: var(--dim); font-size: 13px; }
.samples li { font-family: var(--mono); font-size: 12px; overflow-wrap: anywhere; }
.empty { color: var(--dim); padding: 1.2rem; text-align: center; border: 1px dashed var(--line);
  border-radius: 8px; margin: 1rem 0 0; }
.treemap { position: relative; height: 340px; border-radius: 8px; overflow: hidden;
  background: var(--muted-bg); }
.cell { position: absolute; overflow: hidden; padding: 6px 8px; color: #fff;
  background: hsl(var(--h) var(--cell-s) var(--cell-l)); border: 1.5px solid var(--card);
  display: flex; flex-direction: column; justify-content: flex-start; min-width: 0;
  transition: filter .15s; }
.cell:hover { filter: brightness(1.15); }
.cell .name { font-weight: 600; font-size: 13px; white-space: pre; overflow: hidden;
  text-overflow: ellipsis; font-family: var(--mono); }
.cell .size { font-size: 12px; opacity: .9; font-variant-numeric: tabular-nums; }
.cell.small { padding: 3px 5px; }
.cell.small .name { font-size: 11px; } .cell.small .size { font-size: 10.5px; }
.cell.large { padding: 10px 12px; }
.cell.large .name { font-size: 16px; } .cell.large .size { font-size: 14px; }
.cell.tiny .name, .cell.tiny .size { visibility: hidden; }
.cell.more { background: repeating-linear-gradient(45deg, #7b8494 0 6px, #8a93a3 6px 12px); }
.cell.here { background: #8b93a1; }
.split { display: grid; grid-template-columns: minmax(260px, 1fr) 2.2fr; gap: 1.5rem;
  align-items: start; }
@media (max-width: 820px) { .split { grid-template-columns: 1fr; } }
.chart { margin-bottom: .6rem; }
.chart .label { font-size: 12px; color: var(--dim); }
.spark { width: 100%; height: 64px; display: block; background: var(--bg); border-radius: 6px; }
.spark .bar { fill: var(--accent); opacity: .75; }
.spark .fail { fill: var(--bad); opacity: .8; }
.spark .line { fill: none; stroke: var(--accent); stroke-width: 2;
  vector-effect: non-scaling-stroke; }
.spark .area { fill: var(--accent); opacity: .14; }
.cap { color: var(--dim); font-size: 12px; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th { text-align: left; color: var(--dim); font-weight: 500; font-size: 12px;
  border-bottom: 1px solid var(--line); padding: .35rem .5rem; }
td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
tbody tr:hover { background: var(--bg); }
.num { text-align: right; }
td.path { font-family: var(--mono); font-size: 12.5px; white-space: pre-wrap;
  overflow-wrap: anywhere; }
td.size { font-weight: 600; }
td.share { white-space: nowrap; color: var(--dim); font-size: 12px; }
.meter { display: inline-block; width: 70px; height: 6px; border-radius: 3px;
  background: var(--meter); margin-right: .45rem; vertical-align: middle; overflow: hidden; }
.meter span { display: block; height: 100%; background: var(--accent); }
.jobs td.url { font-family: var(--mono); font-size: 12.5px; overflow-wrap: anywhere;
  white-space: pre-wrap; }
.jobs td.t { white-space: nowrap; }
.jobs td.url { min-width: 16rem; }
.jobs .err { color: var(--bad); font-size: 12.5px; white-space: pre-wrap;
  overflow-wrap: anywhere; }
footer { color: var(--dim); font-size: 12px; text-align: center; margin-top: 1.5rem; }
"""
