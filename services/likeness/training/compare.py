"""CompareRuns: a side-by-side table of runs that makes every difference impossible to miss.

Seed doc 004 is the motivating story: three runs trained on identical captions; one setting (the
LoRA rank) differed unnoticed, and weeks went into "fixing" the captions. So the table answers
"what is different?" first:

- every resolved setting is a row, plus the dataset's image and caption digests, artifact sizes
  and results; rows whose values are not all equal are marked and sorted first in their category
  (causes, below, before the rest);
- `differing_settings` names the settings that can change the trained weights and differ. A value
  that only took a default derived from another setting (alpha = rank) is shown, marked, in its
  row, but not listed as a cause: two runs that differ only in rank name `spec.rank` alone.
  Placement fields (name, output prefix, executor, Kubernetes scheduling) never change the
  weights and are rows but not causes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from likeness.core.errors import InvalidArgument
from likeness.training.registry.records import RunRecord

SETTING, DATASET, ARTIFACT, RESULT = "setting", "dataset", "artifact", "result"
CATEGORIES = (SETTING, DATASET, ARTIFACT, RESULT)
PLACEMENT_FIELDS = ("name", "output_prefix", "executor", "kubernetes")
DERIVED_DEFAULTS = {"alpha": "rank"}  # field -> the setting its default is derived from
DATASET_SPEC_FIELDS = ("dataset_uri", "missing_caption_policy")
MAX_RUNS = 20


@dataclass(frozen=True)
class Row:
    field: str
    category: str
    values: tuple[str, ...]
    differs: bool


@dataclass(frozen=True)
class Comparison:
    run_ids: tuple[str, ...]
    rows: tuple[Row, ...]
    differing_settings: tuple[str, ...]

    def row(self, field: str) -> Row:
        return next(r for r in self.rows if r.field == field)


def text(value) -> str:
    """One cell as text: floats with 6 significant digits, NaN as `NaN`, lists as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else format(value, ".6g")
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _spec_rows(runs: list[RunRecord]) -> tuple[list[Row], list[str]]:
    rows, causes = [], []
    fields = [k for k in runs[0].spec if k != "defaulted"]
    for name in fields:
        values = [r.spec.get(name) for r in runs]
        if name == "kubernetes":
            values = [json.dumps(v, sort_keys=True) for v in values]
        cells = []
        for r, v in zip(runs, values, strict=True):
            derived = name in DERIVED_DEFAULTS and name in r.spec.get("defaulted", ())
            cells.append(text(v) + (f" (default = {DERIVED_DEFAULTS[name]})" if derived else ""))
        differs = len({text(v) for v in values}) > 1
        category = DATASET if name in DATASET_SPEC_FIELDS else SETTING
        rows.append(Row(f"spec.{name}", category, tuple(cells), differs))
        explained = name in DERIVED_DEFAULTS and all(name in r.spec.get("defaulted", ()) for r in runs)
        if differs and name not in PLACEMENT_FIELDS and not explained:
            causes.append(f"spec.{name}")
    return rows, causes


def _final(run: RunRecord):
    return run.checkpoints[-1] if run.checkpoints else None


def _measured_rows(runs: list[RunRecord]) -> list[tuple[str, str, list]]:
    best = [r.best_checkpoint for r in runs]
    final = [_final(r) for r in runs]

    def of(items, getter):
        return [getter(i) if i is not None else None for i in items]

    duration = [(r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else None
                for r in runs]
    return [
        ("base_model_digest", SETTING, [r.base_model_digest for r in runs]),
        ("dataset_digest", DATASET, [r.dataset_digest for r in runs]),
        ("captions_digest", DATASET, [r.captions_digest for r in runs]),
        ("image_count", DATASET, [r.image_count for r in runs]),
        ("skipped_count", DATASET, [len(r.skipped) for r in runs]),
        ("final.diffusers_weights.size_bytes", ARTIFACT, of(final, lambda c: c.diffusers_weights.size)),
        ("final.kohya_weights.size_bytes", ARTIFACT, of(final, lambda c: c.kohya_weights.size)),
        ("final.state.size_bytes", ARTIFACT, of(final, lambda c: c.state.size)),
        ("checkpoint_count", ARTIFACT, [len(r.checkpoints) for r in runs]),
        ("state", RESULT, [r.state for r in runs]),
        ("steps", RESULT, [r.step for r in runs]),
        ("final.loss", RESULT, of(final, lambda c: c.loss)),
        ("best_epoch", RESULT, [r.best_epoch for r in runs]),
        ("best.clip_score", RESULT, of(best, lambda c: c.clip_score)),
        ("best.identity_similarity", RESULT, of(best, lambda c: c.identity_similarity)),
        ("train_seconds", RESULT, [r.timings.get("train") for r in runs]),
        ("duration_seconds", RESULT, duration),
    ]


def compare_runs(runs: list[RunRecord]) -> Comparison:
    if not 2 <= len(runs) <= MAX_RUNS:
        raise InvalidArgument("run_ids", f"{len(runs)} runs given; compare 2 to {MAX_RUNS}")
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("run_ids", "lists a run more than once")
    rows, causes = _spec_rows(runs)
    for name, category, values in _measured_rows(runs):
        cells = tuple(text(v) for v in values)
        rows.append(Row(name, category, cells, len(set(cells)) > 1))
        if name == "base_model_digest" and len(set(cells)) > 1:
            causes.append(name)  # same model name, different weights: a cause of its own
    order = {c: i for i, c in enumerate(CATEGORIES)}
    # causes first, then other differing rows, then equal rows; stable: spec order otherwise
    rows.sort(key=lambda r: (order[r.category], 0 if r.field in causes else 1 if r.differs else 2))
    return Comparison(tuple(ids), tuple(rows), tuple(causes))
