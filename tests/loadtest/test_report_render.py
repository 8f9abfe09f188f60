"""The load test's ``report.html`` as a person sees it: a real run's report rendered by
headless Chromium (Debian's ``chromium``).

The verdict banner must be in the first 800 pixels and no element may be wider than the page,
at a desktop width and at a narrow one. The page carries no script; for the check a copy gets
one that measures the layout and writes it into the DOM, which ``--dump-dom`` prints. A
screenshot of the first screen is kept beside it (``report-1280.png``) for a person to look at.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import pytest
import trio

from tests.loadtest.test_runner import environment, loadtest_command
from tests.services import require_tool

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

MEASURE = """
<script>
(function () {
  const page = document.documentElement.clientWidth;
  const wide = [];
  for (const element of document.querySelectorAll("body *")) {
    const box = element.getBoundingClientRect();
    if (box.right > page + 1 || box.left < -1) {
      wide.push(element.tagName + " " + Math.round(box.left) + "-" + Math.round(box.right));
    }
  }
  const banner = document.getElementById("verdict").getBoundingClientRect();
  document.body.setAttribute("data-layout", JSON.stringify({
    page: page,
    scroll: document.documentElement.scrollWidth,
    wide: wide.slice(0, 20),
    banner: [banner.top, banner.bottom],
    verdict: document.getElementById("verdict").textContent,
  }));
})();
</script>
"""


async def chromium(binary: str, profile: Path, width: int, *args: str) -> str:
    """Run headless Chromium once at ``width`` x 800; return its stdout."""
    with trio.fail_after(90):
        result = await trio.run_process(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},800",
             *args],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return result.stdout.decode()


def with_measuring_script(page: Path, width: int) -> Path:
    """A copy of ``page`` that measures its own layout once loaded."""
    checked = page.with_name(f"check-{width}.html")
    text = page.read_text(encoding="utf-8")
    checked.write_text(text.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    return checked


async def layout(binary: str, page: Path, profile: Path, width: int) -> dict:
    """What the measuring script found on ``page`` rendered at ``width``."""
    checked = with_measuring_script(page, width)
    dom = await chromium(binary, profile, width, "--dump-dom", checked.as_uri())
    match = re.search(r'data-layout="([^"]*)"', dom)
    assert match is not None, dom[-2000:]
    return json.loads(html.unescape(match.group(1)))


async def test_the_report_shows_its_verdict_first_and_fits_the_page(tmp_path: Path) -> None:
    binary = require_tool("chromium", package="chromium")
    out = tmp_path / "run"
    junit = tmp_path / "out.xml"
    with trio.fail_after(120):
        run = await trio.run_process(
            loadtest_command("depth", "500", "--duration", "5", "--warmup", "1", "--quiet",
                             "--out", str(out), "--junit", str(junit)),
            cwd=tmp_path, env=environment(), capture_stdout=True, capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr).decode()
    assert (await trio.Path(junit).read_text()).count("<testcase ") == 12
    page = out / "report.html"
    for width in (1280, 800):
        found = await layout(binary, page, tmp_path / f"profile-{width}", width)
        assert found["verdict"].startswith("PASS: 12/12"), found
        top, bottom = found["banner"]
        assert top >= 0 and bottom <= 800, f"the banner is not in the first 800 px: {found}"
        assert found["wide"] == [], f"wider than the {found['page']} px page: {found['wide']}"
        assert found["scroll"] <= found["page"], found
    shot = out / "report-1280.png"
    await chromium(binary, tmp_path / "profile-shot", 1280, f"--screenshot={shot}", page.as_uri())
    assert (await trio.Path(shot).stat()).st_size > 10_000
    print(f"screenshot: {shot}", file=sys.stderr)
