"""The lifecycle every model backend declares: detectors, identity encoders, embedding encoders,
face restorers and generation engines.

`load()` reads weights and raises `ModelMissing` naming the missing files; it never falls back to
another model. `warmup()` runs one inference so the first request does not pay for lazy
initialisation. `describe()` returns what the service logs and reports about the model at start.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ModelBackend(Protocol):
    name: str

    def load(self) -> None: ...

    def warmup(self) -> None: ...

    def describe(self) -> dict: ...
