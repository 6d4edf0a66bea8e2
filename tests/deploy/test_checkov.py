"""checkov scans the rendered chart (default and GPU values): no failed check at all, and every
skipped check carries its reason in the chart (checkov.io/skip annotations).

checkov pins old versions of packages the services use (packaging, networkx), so it lives in its
own venv, .venv-tools, created on first use from the package registry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.deploy.tools import CHART, ROOT, helm_template

CHECKOV_VERSION = "3.3.30"
TOOLS_VENV = ROOT / ".venv-tools"


def checkov() -> str:
    exe = TOOLS_VENV / "bin" / "checkov"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True, timeout=120)
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"],
                       check=True, timeout=900)
    return str(exe)


@pytest.mark.slow
def test_checkov_finds_no_failed_check(tmp_path):
    (tmp_path / "default.yaml").write_text(helm_template())
    (tmp_path / "gpu.yaml").write_text(helm_template("-f", str(CHART / "values-gpu.yaml")))
    result = subprocess.run(
        [checkov(), "-d", str(tmp_path), "--framework", "kubernetes", "--output", "json", "--quiet",
         "--skip-download", "--compact"],
        capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report.get("summary", {})
    failed = report.get("results", {}).get("failed_checks", [])
    assert not failed, "\n".join(f"{f['check_id']} {f['check_name']}: {f['resource']}" for f in failed)
    assert summary.get("passed", 0) > 500, summary
    for skipped in report["results"].get("skipped_checks", []):
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{skipped['check_id']} on {skipped['resource']} is skipped without a reason"
