"""A job report opens in a real browser (headless Chromium) with its sections and images."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest

from likeness.core.images import encode_png
from likeness.orchestrator.context import Outcome
from likeness.orchestrator.jobstore import JobRecord
from likeness.orchestrator.report import render_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is installed by tools/install_sysdeps.sh")
def test_report_renders_in_headless_chromium(tmp_store, tmp_path):
    rng = np.random.default_rng(0)
    uris = [tmp_store.put(f"img/{i}.png", encode_png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),
                          "image/png").uri
            for i in range(3)]
    outcome = Outcome(
        {"selected": 2, "candidates": 3},
        {},
        {"sections": [
            {"type": "gallery", "title": "Selected set by cluster",
             "groups": [{"name": "cluster 0", "items": [{"uri": uris[0], "caption": "a"},
                                                        {"uri": uris[1], "caption": "b"}]}]},
            {"type": "table", "title": "Rejections", "columns": ["reason", "count"], "rows": [["no_face", 1]]},
            {"type": "bars", "title": "Selected per seed", "unit": "images", "data": [["1", 2], ["2", 1]]},
        ]})
    now = datetime.now(UTC)
    job = JobRecord("job123", "curate", "SUCCEEDED", b"", now, now, attempts=1)
    html = render_report(job, outcome, {"validate": 1.5}, ["one warning"], tmp_store)
    page = tmp_path / "report.html"
    page.write_text(html)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # The DOM after the page loaded and its images decoded: what a user's browser shows.
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in ("Summary", "Selected set by cluster", "Rejections", "Selected per seed", "Stage timings",
                    "Warnings"):
        assert f"<h2>{section}" in dom.stdout
    assert dom.stdout.count('src="data:image/jpeg;base64,') == 2
    shot = tmp_path / "shot.png"
    done = subprocess.run([CHROMIUM, *flags, "--window-size=1000,1400", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 10_000  # a real rendered page, not a blank
