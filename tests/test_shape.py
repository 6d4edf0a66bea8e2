"""The floor plan stays learnable: servicers only translate (at most 120 lines), no function in
services/ grows past 50 lines (migrations and generated stubs aside), and client code stays out of
the deployed service packages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "services" / "likeness"
MAX_SERVICER_LINES = 120
MAX_FUNCTION_LINES = 50
EXEMPT = ("api", "migrations")  # generated protobuf stubs; Alembic migrations


def _sources() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if not any(part in EXEMPT for part in p.relative_to(ROOT).parts)]


def test_the_tree_is_found():
    assert len(_sources()) > 50 and (ROOT / "detection" / "servicer.py") in _sources()


def test_servicers_are_thin():
    servicers = list(ROOT.glob("*/servicer.py"))
    assert len(servicers) == 6
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in servicers}
    long = {name: n for name, n in sizes.items() if n > MAX_SERVICER_LINES}
    assert not long, f"servicers over {MAX_SERVICER_LINES} lines (move work to convert.py or domain code): {long}"


def test_every_service_has_a_convert_module():
    missing = [p.parent.name for p in ROOT.glob("*/servicer.py") if not (p.parent / "convert.py").is_file()]
    assert not missing


def test_no_function_is_long():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_services_do_not_import_client_code():
    offenders = []
    for path in _sources():
        if path.relative_to(ROOT).parts[0] == "client":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("likeness.client")]
    # the package's `python -m likeness` entry point is the one place that starts the CLI
    assert offenders == ["__main__.py: likeness.client.cli"]
