"""report.html in a real browser: the demo's report (a one-epoch run of ``lightnets demo``) rendered by headless
Chromium must load every image (no broken ``<img>``), log no console error and show the metrics.

Chromium is Debian's ``chromium`` package, which ``scripts/setup.sh`` installs when it is missing and apt-get
is available; elsewhere the test skips and says so.  No Python package is needed: a copy of the report gets a
small probe script appended that, on ``load``, writes what it found into the page, and Chromium's
``--dump-dom`` prints the page after loading; console messages come from Chromium's own log on stderr.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

PROBE = """<script>
window.__probeErrors = [];
window.addEventListener("error", e => window.__probeErrors.push(String(e.message || (e.target && e.target.src) || e)), true);
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 80));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: images.length, broken: broken, errors: window.__probeErrors,
                                    text: document.body.innerText});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (scripts/setup.sh installs Debian's chromium with apt-get where it can)")


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    from lightnets.train.demo import run_demo

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("demo") / "run"
        run_demo(out=str(out), epochs=1, log_fn=lambda _: None)
    finally:
        torch.set_num_threads(before)
    return out / "report.html"


def _render(browser: str, page: Path, tmp: Path) -> tuple[dict, list[str]]:
    """(what the probe found, Chromium's console lines) for ``page``."""
    probed = tmp / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    # a negative code is a signal: Chromium itself crashed (e.g. under a `ulimit -v` it cannot reserve memory)
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}"
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the probe did not run; page ends: {proc.stdout[-500:]!r}"
    import html

    found = json.loads(html.unescape(match.group(1)))
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    return found, console


def test_demo_report_renders_in_chromium(demo_report: Path, tmp_path: Path) -> None:
    browser = _chromium()
    found, console = _render(browser, demo_report, tmp_path)
    assert found["images"] >= 3, found["images"]  # curves, confusion matrix, thumbnails of the worst digits
    assert found["broken"] == [], found["broken"]
    assert found["errors"] == [] and console == [], (found["errors"], console)
    text = found["text"]
    for needle in ("Final metrics", "top-1", "Confusion matrix", "Per-class precision", "macro"):
        assert needle.lower() in text.lower(), needle
    assert re.search(r"\d+(\.\d+)?\s*%", text), "no percentage shown"


def test_the_probe_sees_a_broken_image(tmp_path: Path) -> None:
    # the check itself can fail: a page with a broken <img> and a script error is caught
    browser = _chromium()
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><img alt=missing src='data:image/png;base64,AAAA'>"
                    "<script>undefinedFunction()</script></body></html>", encoding="utf-8")  # fmt: skip
    found, console = _render(browser, page, tmp_path)
    assert found["broken"] == ["missing"]
    assert any("Uncaught ReferenceError: undefinedFunction" in line for line in console), console


def test_comparison_report_renders_in_chromium(demo_report: Path, tmp_path: Path) -> None:
    # issue 14: the checkpoint beside its deployed forms (fp32 and int8 ONNX of the demo run), compare.html in a browser
    browser = _chromium()
    pytest.importorskip("onnxruntime")
    from lightnets.deploy import export
    from lightnets.evaluation.deployed import compare_deployed
    from lightnets.evaluation.deployed_report import write_comparison

    run = demo_report.parent
    files = [export(run, "onnx", output=tmp_path / "demo.onnx", latency_s=0).path,
             export(run, "onnx", quantize="int8", output=tmp_path / "demo.int8.onnx", latency_s=0).path]  # fmt: skip
    cmp = compare_deployed(run, "digits", files, latency_s=0.2)
    page = write_comparison(tmp_path / "cmp", cmp)["html"]
    found, console = _render(browser, page, tmp_path)
    assert found["images"] >= 3, found["images"]  # a confusion matrix per form
    assert found["broken"] == [], found["broken"]
    assert found["errors"] == [] and console == [], (found["errors"], console)
    for needle in ("checkpoint", "demo.onnx", "demo.int8.onnx"):
        assert needle in found["text"], needle
