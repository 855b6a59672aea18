"""The page at ``/`` in a real browser: headless Chromium (Debian's ``chromium``) loads it from a
test daemon; the rendered DOM is checked against the scanned tree (``du``) and a screenshot is
saved as ``test-artefacts/page.png`` at the repository root.

Without Chromium the test installs it when it can (root, apt, a candidate), else skips — or
fails when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from diskaudit.exporter.state import HISTORY_LIMIT, ExporterState
from diskaudit.http.page import render_page, squarify
from diskaudit.jobs.model import Job, Status
from diskaudit.render import display_path, human_bytes
from diskaudit.scan.model import DirUsage, RootUsage
from diskaudit.settings import RootSpec
from tests.daemon import Daemon, running_daemon
from tests.gitservers import git_daemon, make_repo
from tests.trees import du, write

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"  # a directory name
BROWSER_TIMEOUT_S = 20.0
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


# --- Chromium --------------------------------------------------------------------------------


def _candidate() -> str | None:
    """The version of Debian's chromium apt would install, or None."""
    if shutil.which("apt-cache") is None:
        return None
    policy = subprocess.run(
        ["apt-cache", "policy", "chromium"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    match = re.search(r"Candidate:\s*(\S+)", policy)
    return match.group(1) if match and match.group(1) != "(none)" else None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get") and _candidate():
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium", "fonts-dejavu-core"],
            capture_output=True,
            timeout=900,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("chromium")
    if found is None:
        reason = "Debian chromium is not installed (apt-get install chromium fonts-dejavu-core)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def browser_processes(profile: Path) -> list[int]:
    """Live processes whose command line names ``profile`` (every Chromium process we start)."""
    needle = os.fsencode(profile)
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        if needle in cmdline and stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X"):
            pids.append(int(entry.name))
    return pids


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    """One headless Chromium run in its own session; stdout. Its whole process group is killed
    afterwards, whatever happened."""
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",  # root in a container: no user namespaces for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-breakpad",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "HOME": str(profile), "LANG": "C.UTF-8", "TZ": "UTC"},
    )
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode()


# --- a small DOM from Chromium's --dump-dom --------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def iter(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find(self, cls: str) -> list[Node]:
        return [n for n in self.iter() if cls in n.classes()]


class DomBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(markup: str) -> Node:
    builder = DomBuilder()
    builder.feed(markup)
    builder.close()
    return builder.root


# --- the scene -------------------------------------------------------------------------------


def build_tree(root: Path) -> Path:
    """A few directories of clearly different sizes, one with a hostile name, one empty."""
    sizes = {"media": [900_000, 700_000], "src": [160_000, 90_000], "docs": [60_000], "tmp": [900]}
    for name, files in sizes.items():
        (root / name).mkdir(parents=True)
        for i, size in enumerate(files):
            write(root / name / f"f{i}", size)
    (root / "src" / "lib").mkdir()
    write(root / "src" / "lib" / "core", 120_000)
    (root / "media" / "photos").mkdir()
    write(root / "media" / "photos" / "a.jpg", 400_000)
    (root / HOSTILE).mkdir()
    write(root / HOSTILE / "x", 30_000)
    (root / "empty").mkdir()
    write(root / "README", 20_000)
    return root


def api(d: Daemon, method: str, path: str, body: object = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        d.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def wait_until(what: str, check: object, d: Daemon, timeout_s: float = 30.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}\n{d.log_text()}"
        time.sleep(0.1)


def page_scans(d: Daemon) -> int:
    """Scans in the page's history of the (only) root."""
    status, body = d.get("/")
    return body.decode().count('class="bar"') if status == 200 else 0


# --- without a browser ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_squarify_tiles_the_box_in_proportion(seed: int) -> None:
    import random

    rng = random.Random(seed)
    values = sorted(
        (rng.choice([1, 10, 1000, 10**6]) * rng.random() + 1e-3 for _ in range(rng.randint(1, 40))),
        reverse=True,
    )
    aspect = rng.choice([1.0, 3.3, 0.5])
    rects = squarify(values, aspect)
    assert len(rects) == len(values)
    total = sum(values)
    for v, r in zip(values, rects, strict=True):
        assert r.w * r.h == pytest.approx(v / total, rel=1e-6, abs=1e-12)
        assert min(r.x, r.y) >= -1e-9
        assert max(r.x + r.w, r.y + r.h) <= 1 + 1e-9
    # No two cells overlap.
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            dx = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
            dy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
            assert dx <= 1e-9 or dy <= 1e-9
    assert squarify([]) == []
    assert squarify([0, 0]) == []


def test_every_name_is_escaped_and_history_is_bounded() -> None:
    root = "/srv/<script>alert(1)</script>" + os.fsdecode(b"\xff")
    spec = RootSpec(root, 2)
    hostile = f"{root}/{HOSTILE}\n\"q'"
    state = ExporterState([spec, RootSpec('/x"<b>', 1)])
    usage = RootUsage(
        root,
        2,
        errors=1,
        entries_scanned=9,
        duration_seconds=0.5,
        entries=(
            DirUsage(root, 0, 5000, 5000, 3, 2),
            DirUsage(hostile, 1, 4000, 4000, 2, 1),
            DirUsage(f"{hostile}/<i>", 2, 1000, 1000, 1, 0),
        ),
        error_samples=(f"{root}/<u>: Permission denied",),
    )
    for _ in range(HISTORY_LIMIT + 5):
        state.record_success(spec, usage)
    state.record_failure(spec, "<b>bang</b>", 1.0)
    [status, _] = state.snapshot.roots
    assert len(status.history) == HISTORY_LIMIT
    assert status.history[-1].ok is False
    assert status.history[0].disk_bytes == 5000
    job = Job(
        "abc<def>",
        "git://h/<script>.git",
        "<ref>",
        Status.FAILED,
        1,
        1.0,
        2.0,
        3.0,
        error='<img src="x">',
    )
    page = render_page(state.snapshot, [job])
    dom = parse(page)
    assert [n.tag for n in dom.iter() if n.tag in ("script", "img", "i", "u", "b")] == []
    for needle in ("<script", "<img", "<i>", "<u>", "<b>", "<ref>"):
        assert needle not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\xff" in page
    [cell] = [n for n in dom.iter() if "cell" in n.classes() and "data-path" in n.attrs]
    assert cell.attrs["data-path"] == display_path(hostile)
    assert cell.attrs["data-bytes"] == "4000"
    assert HOSTILE in cell.text()
    assert '/x"<b>' in dom.text()  # shown as text, escaped in the source


# --- the test --------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_page_in_headless_chromium(tmp_path: Path, chromium: str) -> None:
    started = time.monotonic()
    root = build_tree(tmp_path / "tree")
    repo = make_repo(tmp_path / "repos" / "app.git", files=8, size=500, commits=2)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    settings = {
        "analyzed-path": str(root),
        "dir-level": 2,
        "scan-interval": "250ms",
        "allowed-schemes": ["git"],
        "allowed-hosts": ["127.0.0.1"],
        "job-workers": 1,
    }
    with git_daemon(repo.parent) as git_url, running_daemon(tmp_path, settings) as d:
        job = api(d, "POST", "/api/v1/jobs", {"url": git_url + "app.git", "ref": "main"})
        job_id = str(job["id"])
        # Some growth while the job runs, so that the history has something to show.
        for i in range(4):
            write(root / "media" / f"grown{i}", 150_000)
            d.wait_for_scan_after(time.time())
        wait_until(
            "job succeeded",
            lambda: api(d, "GET", f"/api/v1/jobs/{job_id}")["status"] == "succeeded",
            d,
        )
        wait_until("a few scans in the history", lambda: page_scans(d) >= 6, d)
        d.wait_for_scan_after(time.time())  # the tree is still from here on
        expected = du(root, depth=2, apparent=False)

        status, raw = d.get("/")
        assert status == 200
        source = raw.decode()
        dom = parse(run_chromium(chromium, profile, "--dump-dom", d.url + "/"))
        ARTEFACTS.mkdir(exist_ok=True)
        shot = ARTEFACTS / "page.png"
        shot.unlink(missing_ok=True)
        run_chromium(
            chromium, profile, f"--screenshot={shot}", "--window-size=1280,900", d.url + "/"
        )
        full = ARTEFACTS / "page-full.png"  # down to the job list
        run_chromium(
            chromium, profile, f"--screenshot={full}", "--window-size=1280,1500", d.url + "/"
        )
        assert d.stop() == 0, d.log_text()
    assert browser_processes(profile) == []

    # No assets from anywhere: no script, stylesheet, font or image from another host.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", source, re.I)
    assert not re.search(r"<script|<link|@import|url\(", source, re.I)
    assert '<meta name="viewport"' in source

    # The hostile name is text, not markup: no element came from it, the title is untouched.
    assert [n.tag for n in dom.iter() if n.tag in ("img", "script", "iframe")] == []
    [head] = [n for n in dom.iter() if n.tag == "head"]
    [title] = [n for n in head.iter() if n.tag == "title"]
    assert title.text() == "diskaudit"

    # The root's total.
    [section] = [n for n in dom.iter() if n.attrs.get("data-root") == str(root)]
    [total] = [n for n in section.iter() if n.tag == "dd" and "data-bytes" in n.attrs]
    assert int(total.attrs["data-bytes"]) == expected[str(root)]
    assert total.text() == human_bytes(expected[str(root)])

    # Treemap: one cell per level-1 directory, exact bytes, du's human size as the label.
    level1 = {p: v for p, v in expected.items() if Path(p).parent == root}
    cells = section.find("cell")
    by_path = {c.attrs["data-path"]: c for c in cells if "data-path" in c.attrs}
    assert by_path.keys() == {display_path(p) for p in level1}
    for path, size in level1.items():
        cell = by_path[display_path(path)]
        assert int(cell.attrs["data-bytes"]) == size, path
        [label] = cell.find("size")
        assert label.text() == human_bytes(size), path
        [name] = cell.find("name")
        assert name.text() == Path(path).name
    [here] = [c for c in cells if "data-here" in c.attrs]
    assert int(here.attrs["data-bytes"]) == expected[str(root)] - sum(level1.values())
    # The cells tile the box: their areas add up to the whole, each in proportion to its bytes.
    areas = {}
    for c in cells:
        style = {
            k.strip(): v.strip().rstrip("%")
            for k, v in (part.split(":") for part in c.attrs["style"].split(";"))
        }
        areas[c.attrs.get("data-path", "here")] = float(style["width"]) * float(style["height"])
    assert sum(areas.values()) == pytest.approx(100 * 100, rel=1e-3)
    for path, size in level1.items():
        assert areas[display_path(path)] / 10_000 == pytest.approx(
            size / expected[str(root)], rel=1e-3
        )

    # Largest directories: levels 1 and 2, exact bytes, human sizes.
    rows = {
        n.attrs["data-path"]: n for n in section.iter() if n.tag == "tr" and "data-path" in n.attrs
    }
    assert rows.keys() == {display_path(p) for p in expected if p != str(root)}
    for path, row in rows.items():
        assert int(row.attrs["data-bytes"]) == expected[path]
        [shown] = row.find("size")
        assert shown.text() == human_bytes(expected[path])

    # History: one bar per scan, no failures.
    assert len(section.find("bar")) >= 6
    assert section.find("fail") == []

    # The job.
    [row] = [n for n in dom.iter() if n.attrs.get("data-job-id") == job_id]
    [badge] = row.find("badge")
    assert badge.text() == "succeeded"
    assert "app.git" in row.text()

    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert time.monotonic() - started < 60
