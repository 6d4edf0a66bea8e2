"""The one state file of a running stack, `<state dir>/stack.json`, written by both `likeness up` and
`make up` (tools/stack.py). Its `client` block says where the orchestrator listens, how to reach the
stack's own artifact store (so the CLI uploads local folders where the services can read them) and
the API token. The CLI finds it from `--state`, else $LIKENESS_STATE_DIR, else the first running
stack of `make up` (/tmp/likeness-stack) and `likeness up` (/tmp/likeness-local)."""

from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "stack.json"
DEFAULT_DIRS = (Path(os.environ.get("LIKENESS_STACK_DIR", "/tmp/likeness-stack")), Path("/tmp/likeness-local"))
STORE_KEYS = ("LIKENESS_STORE_URI", "LIKENESS_S3_ENDPOINT", "LIKENESS_S3_ACCESS_KEY", "LIKENESS_S3_SECRET_KEY",
              "LIKENESS_S3_SECURE", "LIKENESS_S3_REGION")


class NoStack(RuntimeError):
    pass


def client_block(orchestrator: str, service_env: dict[str, str]) -> dict:
    """What a client needs, taken from the orchestrator's own environment."""
    return {"orchestrator": orchestrator, "store": {k: service_env[k] for k in STORE_KEYS if k in service_env},
            "token": service_env.get("LIKENESS_ORCHESTRATOR_AUTH_TOKEN", "")}


def update(folder: Path, **fields) -> dict:
    """Merges `fields` into `<folder>/stack.json` (created when absent) and returns the whole state."""
    path = folder / FILE
    state = json.loads(path.read_text()) if path.exists() else {}
    state.update(fields)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    return state


def _read(candidate: Path) -> dict | None:
    path = candidate if candidate.suffix == ".json" else candidate / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def find(state: Path | None = None) -> dict:
    """The state of the stack the CLI talks to; {} when none is running and none was named."""
    named = state or (Path(os.environ["LIKENESS_STATE_DIR"]) if os.environ.get("LIKENESS_STATE_DIR") else None)
    if named is not None:
        found = _read(named)
        if found is None:
            raise NoStack(f"no stack state at {named} ({FILE} is written by `likeness up --state DIR` and by "
                          "`make up` with LIKENESS_STACK_DIR=DIR)")
        return found
    for folder in DEFAULT_DIRS:
        found = _read(folder)
        if found and found.get("running") and found.get("client"):
            return found
    return {}


def store_settings(state: dict):
    """CommonSettings of the stack's artifact store (the environment's LIKENESS_* when no stack)."""
    from likeness.core.settings import CommonSettings

    env = (state.get("client") or {}).get("store") or {}
    return CommonSettings(**{k.removeprefix("LIKENESS_").lower(): v for k, v in env.items()})
