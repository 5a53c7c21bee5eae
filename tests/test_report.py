"""`atelier report RUN` over a store written row by row with a real git workspace and real images: the story is all
there, agent-written text stays text, and a real headless Chromium opens the page with no console message."""

import io
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.cli import main
from app.report import write
from app.report.chart import ticks
from app.report.escape import text
from app.store import Run, Store
from app.workspace import Workspace
from conftest import TOY

EVIL = (
    "<script>console.log('pwned')</script></pre><img src=x onerror=alert(1)> "
    "\"quoted\" 'single' \x1b[31mred\x07 \u202eevil\x00"
)
T0 = 1_790_000_000.0
SCREEN = (1200, 2400)


class Tags(HTMLParser):
    """Every tag opened, and the text inside each element whose class is looked for."""

    def __init__(self, wanted: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.wanted, self.depth = wanted, 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if self.depth or self.wanted in (dict(attrs).get("class") or "").split():
            self.depth += 1
            if self.depth == 1:
                self.texts.append("")

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.texts[-1] += data


def png(path: Path, colour: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), colour)
    image.putpixel((0, 0), (255, 255, 255))
    image.save(path)


@pytest.fixture
def story(tmp_path) -> tuple[Store, str, Path]:
    """A finished toy run: round 1 accepted, round 2 rejected with agent-written text everywhere, round 3 failed."""
    store = Store(tmp_path / "atelier.db")
    run_id = "toy-20260921-133320-a1b2"
    run_dir = tmp_path / "runs" / run_id
    ws = Workspace.create(run_dir / "workspace", TOY / "seed", f"atelier/{run_id}")
    seed = ws.head
    knobs = ws.path / "atelier.knobs.toml"
    knobs.write_text(knobs.read_text().replace('default = "none"', 'default = "kv"'))
    accepted = ws.keep("accepted", 1, ws.commit("round 1: cache=kv"))
    (ws.path / "notes.txt").write_text(f"written by an agent: {EVIL.replace(chr(0), '')}\n")  # NUL: binary
    rejected = ws.reject(2, "round 2 (rejected)", accepted)
    fields: dict[str, Any] = dict(
        id=run_id, target="toy", target_dir=str(TOY), executor="mlx", policy="tuner", status="done",
        metric="decode_s", direction="lower", baseline=0.9, noise=0.05, best=0.3, best_commit=accepted,
        dir=str(run_dir), branch=f"atelier/{run_id}", pid=None, started=T0, updated=T0 + 100,
        options=json.dumps({"policy": "tuner"}), manifest="{}",
    )  # fmt: skip
    store.add_run(Run(**fields))
    rounds = [
        (1, "cache=kv", "accepted", 0.3, accepted, seed, "decode_s 0.3 vs 0.9 (3.000×, beyond the noise band)"),
        (2, f"task {EVIL}", "rejected", 0.31, rejected, accepted, f"reason {EVIL}"),
        (3, "cache=none", "failed", None, None, accepted, "judge: prompt 0: tokens differ"),
    ]
    for n, task, status, metric, commit, start, reason in rounds:
        store.start_round(run_id, n, task, {"knob": task[:5]}, start)
        values = dict(metric=metric, ratio=0.9 / metric, gain=(0.9 if n == 1 else 0.3) / metric) if metric else {}
        store.end_round(run_id, n, status, reason, commit_sha=commit, **values)
        store.add_verdict(run_id, n, "judge", status != "failed", [f"judge says {EVIL}" if n == 2 else reason])
    for i, value in enumerate([0.91, 0.89, 0.9, 0.92]):
        store.add_metrics(run_id, 0, "baseline", i, {"decode_s": value})
    for i in range(3):
        store.add_metrics(run_id, 1, "incumbent", i, {"decode_s": 0.9 + i / 100})
        store.add_metrics(run_id, 1, "candidate", i, {"decode_s": 0.3 + i / 100})
    store.add_usage(run_id, 2, "implementer", calls=3, tokens_in=1200, tokens_out=340, active_s=41.6, cost=0.125)
    store.event(run_id, None, "baseline", "decode_s 0.9 (noise band ±5.0%)")
    store.event(run_id, None, "stop", f"max rounds: 3 rounds played {EVIL}")
    outputs = run_dir / "outputs"
    png(outputs / "0" / "cat.png", (200, 40, 40))
    png(outputs / "0" / "cat.reference.png", (40, 40, 200))
    png(outputs / "1" / "cat.png", (40, 200, 40))
    png(outputs / "1" / "cat.reference.png", (40, 40, 200))
    return store, run_id, tmp_path


def test_the_report_tells_the_whole_story(story):
    store, run_id, tmp_path = story
    page = write(store, run_id, tmp_path / "report.html").read_text()
    assert "Atelier run toy-20260921-133320-a1b2" in page and str(TOY) in page
    assert "decode_s 0.9 (noise band ±5.0%)" in page and "0.91 0.89 0.9 0.92" in page
    for n in (1, 2, 3):
        assert f'<section id="round-{n}">' in page and f'href="#round-{n}"' in page
    assert "decode_s 0.3 vs 0.9 (3.000×, beyond the noise band)" in page
    assert '<span class="del">-default = &quot;none&quot;</span>' in page
    assert '<span class="add">+default = &quot;kv&quot;</span>' in page
    assert "candidate samples: 0.3 0.31 0.32" in page
    assert page.count("data:image/png;base64,") == 3, "seed, round 1 and the reference once"
    assert "cat · reference: the same picture as cat · reference in the baseline" in page
    assert "Not confirmed" in page and "<dd>not confirmed</dd>" in page
    assert f"atelier export {run_id} --to {run_id}-stack" in page
    assert "<td>cache</td><td><code>&#x27;kv&#x27;</code></td>" in page
    assert page.count('class="accepted" cx=') == 1 and page.count('class="rejected" d=') == 1
    assert page.count('class="unmeasured"') == 1
    assert "<td>implementer</td><td>3</td><td>1200</td><td>340</td><td>42 s</td><td>$0.12</td>" in page


def test_agent_text_is_escaped_and_kept_whole(story):
    store, run_id, tmp_path = story
    page = write(store, run_id, tmp_path / "report.html").read_text()
    tags = Tags("reason")
    tags.feed(page)
    assert not [t for t, _ in tags.tags if t in ("script", "iframe", "object", "embed", "base", "link")]
    assert all(a["src"].startswith("data:image/") for t, a in tags.tags if t == "img")
    assert all(a["href"].startswith("#") for _, a in tags.tags if "href" in a), "nothing to fetch"
    assert not [a for _, a in tags.tags if any(k.startswith("on") for k in a)]
    shown = EVIL.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace("\u202e", "\\u202e").replace("\x00", "\\x00")
    assert tags.texts[1] == f"reason {shown}", "the reason is whole, as text, its hidden characters shown"
    assert page.count("&lt;script&gt;console.log(&#x27;pwned&#x27;)&lt;/script&gt;&lt;/pre&gt;") == 7, (
        "status, table, tooltip, title, reason, verdict, diff"
    )
    assert '<span class="add">+written by an agent: &lt;script&gt;' in page, "the diff is text too"
    assert "&quot;quoted&quot;" in page and "\\x1b[31mred\\x07" in page
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", page)
    assert page.count("<pre>") == page.count("</pre>")
    assert text("a\tb\nc\u2066d\ud800") == "a\tb\nc\\u2066d\\ud800"


def test_a_confirmed_run_shows_its_headline_and_intervals(story):
    store, run_id, tmp_path = story
    store.update_run(run_id, headline=2.87, headline_low=2.7, headline_high=3.05)
    store.set_round(run_id, 1, low=2.8, high=3.2, pairs=8)
    page = write(store, run_id, tmp_path / "report.html").read_text()
    assert "2.870× the seed, interval 2.700–3.050×" in page and "not confirmed" not in page.lower()
    assert "3.000× [2.800–3.200], 8 pairs" in page
    assert page.count('class="whisker') == 2 and 'class="confirmed"' in page


def test_big_images_are_scaled_and_broken_ones_named(story):
    store, run_id, tmp_path = story
    folder = tmp_path / "runs" / run_id / "outputs" / "2"
    folder.mkdir(parents=True)
    Image.linear_gradient("L").resize((1100, 1100)).save(folder / "big.png")
    (folder / "broken.png").write_bytes(b"<script>not a png")
    page = write(store, run_id, tmp_path / "report.html").read_text()
    assert "big · round 2 (shown at 512×512, from 1100×1100)" in page
    assert "broken · round 2: not an image the report can show (cannot identify image file" in page
    assert page.count("data:image/png;base64,") == 4 and "not a png" not in page


def test_a_run_that_failed_before_its_baseline_still_has_a_report(tmp_path):
    store = Store(tmp_path / "atelier.db")
    fields: dict[str, Any] = dict(
        id="toy-1", target="toy", target_dir=str(tmp_path / "moved"), executor="mlx", policy="tuner",
        status="failed", metric="decode_s", direction="lower", baseline=None, noise=None, best=None,
        best_commit=None, dir=str(tmp_path / "runs" / "toy-1"), branch="atelier/toy-1", pid=None, started=T0,
        updated=T0, options="{}", manifest="{}",
    )  # fmt: skip
    store.add_run(Run(**fields))
    store.event("toy-1", None, "error", "the seed stack fails its own checker")
    page = write(store, "toy-1", tmp_path / "r.html").read_text()
    assert "No rounds played." in page and "no measured rounds yet" in page and "No stack to export" in page
    assert "the target bundle cannot be read at" in page and "the seed stack fails its own checker" in page
    assert "no git workspace at" in page


def test_y_labels_sit_at_their_values(story):
    assert ticks(0.95, 3.2) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert ticks(0.98, 1.031) == [0.98, 0.99, 1.0, 1.01, 1.02, 1.03]
    assert ticks(0.006, 21.7) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20]
    store, run_id, tmp_path = story
    store.set_round(run_id, 2, gain=float("inf"), low=0.0, high=float("inf"))
    page = write(store, run_id, tmp_path / "report.html").read_text()
    labels = {m[1]: float(m[0]) for m in re.findall(r'class="ylabel" x="\d+" y="([\d.]+)">([\d.]+×)<', page)}
    dot = float(re.search(r'<circle class="accepted" cx="[\d.]+" cy="([\d.]+)"', page)[1])
    assert labels["3.0×"] - 4 == dot, "round 1's 3.0× sits beside the 3.0× label"
    spacing = (labels["1.0×"] - labels["1.5×"]) / (labels["2.5×"] - labels["3.0×"])
    assert spacing == pytest.approx(math.log(1.5) / math.log(1.2), rel=0.02), "a log scale"
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert "inf" not in svg and "nan" not in svg, "an infinite gain is left out of the chart"


def test_the_cli_writes_where_it_says(story, capsys, monkeypatch):
    store, run_id, tmp_path = story
    monkeypatch.setenv("ATELIER_HOME", str(tmp_path))
    assert main(["report", run_id[:12]]) == 0
    default = tmp_path / "runs" / run_id / "report.html"
    assert capsys.readouterr().out.strip() == f"atelier: report written to {default}"
    assert default.read_text().startswith("<!DOCTYPE html>")
    (tmp_path / "out").mkdir()
    assert main(["report", run_id, "--to", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / f"{run_id}.html").exists()
    assert main(["report", run_id, "--to", str(tmp_path / "missing" / "r.html")]) == 1
    assert "no folder" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    assert main(["report", "nope"]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def chromium(page: Path, shot: Path, profile: Path) -> str:
    """Open page in headless Chromium, save a screenshot; its log (console messages are its CONSOLE lines)."""
    args = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
        f"--window-size={SCREEN[0]},{SCREEN[1]}", f"--screenshot={shot}", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.fixture
def browser() -> None:
    """Debian's chromium: required under CI (.ci/run installs it), else the test is skipped with the reason."""
    if shutil.which("chromium"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs Debian's chromium: .ci/run installs it with apt-get")
    pytest.skip("needs Debian's chromium: apt-get install chromium")


@pytest.mark.slow
def test_chromium_opens_the_report_with_no_console_message(story, browser):
    store, run_id, tmp_path = story
    store.update_run(run_id, headline=2.87, headline_low=2.7, headline_high=3.05)
    page = write(store, run_id, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    log = chromium(page, shot, tmp_path / "profile")
    assert not [line for line in log.splitlines() if ":CONSOLE" in line]
    with Image.open(io.BytesIO(shot.read_bytes())) as image:
        assert (image.format, image.size) == ("PNG", SCREEN)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "a page with text, a chart and images, not a blank one"
    escaped = "&lt;script&gt;console.log(&#x27;pwned&#x27;)&lt;/script&gt;"
    unescaped = page.read_text().replace(escaped, "<script>console.log('pwned')</script>", 1)
    (tmp_path / "bad.html").write_text(unescaped)
    log = chromium(tmp_path / "bad.html", tmp_path / "bad.png", tmp_path / "profile2")
    assert [line for line in log.splitlines() if ":CONSOLE" in line], "a script that slipped through is seen"
