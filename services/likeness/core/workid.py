"""Content ids of units of work: the hash of canonical inputs plus the model digest.

Outputs are stored under keys derived from the id, so a rerun finds finished work and skips it.
"""

from __future__ import annotations

import hashlib
import json


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def work_id(kind: str, inputs: dict, model_digest: str = "") -> str:
    """Stable 32-hex id of one unit of work (`kind` namespaces generation vs assessment ...)."""
    h = hashlib.sha256()
    h.update(kind.encode() + b"\0" + model_digest.encode() + b"\0" + canonical_json(inputs))
    return h.hexdigest()[:32]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
