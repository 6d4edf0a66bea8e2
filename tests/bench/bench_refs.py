"""What a benchmark script refers to in the code base, read from its source: every name it imports
from likeness, tests or bench, and every attribute it reads, sets or patches on those names.
Benchmarks import most of what they use inside their functions, so importing a bench module alone
would not notice a function that moved; reading the source does, without running the benchmark."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
OURS = ("likeness", "tests", "bench")


def _module_name(name: str) -> str:
    """Benches run as scripts have bench/ on sys.path and import their siblings bare (`from timing import`)."""
    return f"bench.{name}" if (BENCH / f"{name.split('.')[0]}.py").exists() else name


def imported_names(tree: ast.AST) -> dict[str, tuple[str, str | None]]:
    """name bound -> (module, attribute or None for the module itself), for imports of our code, in any scope."""
    names: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = _module_name(node.module)
            if module.split(".")[0] in OURS:
                for alias in node.names:
                    names[alias.asname or alias.name] = (module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                module = _module_name(alias.name)
                if module.split(".")[0] in OURS:
                    bound = module if alias.asname or module != alias.name else module.split(".")[0]
                    names[alias.asname or alias.name.split(".")[0]] = (bound, None)
    return names


def resolve(module: str, attr: str | None):
    mod = importlib.import_module(module)
    if attr is None:
        return mod
    if hasattr(mod, attr):
        return getattr(mod, attr)
    return importlib.import_module(f"{module}.{attr}")  # `from package import submodule`


def attribute_chains(tree: ast.AST, names: set[str]) -> set[tuple[str, ...]]:
    """(name, attr, attr, ...) for every `name.attr.attr` read, set or patched, where name is imported."""
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in names:
                chains.add((inner.id, *reversed(parts)))
    return chains


def missing_refs(source: str) -> list[str]:
    """Every import or attribute of our code that `source` uses and that no longer exists."""
    tree = ast.parse(source)
    names = imported_names(tree)
    found, missing = {}, []
    for name, (module, attr) in names.items():
        try:
            found[name] = resolve(module, attr)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{module}{'.' + attr if attr else ''} ({exc.__class__.__name__})")
    for name, *attrs in sorted(attribute_chains(tree, set(found))):
        obj = found[name]
        for i, attr in enumerate(attrs):
            if isinstance(obj, type(importlib)) and not hasattr(obj, attr):
                try:  # a submodule not imported yet
                    obj = importlib.import_module(f"{obj.__name__}.{attr}")
                    continue
                except ImportError:
                    pass
            if not hasattr(obj, attr):
                missing.append(".".join((name, *attrs[:i + 1])))
                break
            obj = getattr(obj, attr)
    return missing
