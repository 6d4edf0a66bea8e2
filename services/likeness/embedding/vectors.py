"""Validation shared by Cluster, Select and Diversity: turn caller vectors into one finite matrix.

Every check names the offending field and index, so a caller with 100,000 vectors learns which one
is wrong instead of getting a numpy broadcasting error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from likeness.core.errors import InvalidArgument


def stack_vectors(rows: Sequence[Sequence[float]], field: str, *, min_count: int = 1,
                  max_count: int | None = None, subfield: str = "") -> np.ndarray:
    """(n, d) float32 matrix from `rows`; InvalidArgument for an empty set, an empty vector, mixed
    dimensions or a NaN/infinite value. `subfield` is appended to `field[i]` in messages
    (`items[3].vector`)."""
    n = len(rows)
    if n < min_count:
        what = "is empty" if n == 0 else f"has {n} vectors"
        raise InvalidArgument(field, f"{what}; at least {min_count} required")
    if max_count is not None and n > max_count:
        raise InvalidArgument(field, f"has {n} vectors, over the limit of {max_count}")
    dim = len(rows[0])
    if dim == 0:
        raise InvalidArgument(f"{field}[0]{subfield}", "vector is empty")
    matrix = np.empty((n, dim), dtype=np.float32)
    for i, row in enumerate(rows):
        if len(row) != dim:
            raise InvalidArgument(f"{field}[{i}]{subfield}",
                                  f"dimension {len(row)} differs from {field}[0]'s {dim}")
        matrix[i] = row
    check_finite(matrix, field, subfield)
    return matrix


def check_finite(matrix: np.ndarray, field: str, subfield: str = "") -> None:
    finite = np.isfinite(matrix)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise InvalidArgument(f"{field}[{i}]{subfield}",
                              f"value {matrix[i, j]} at component {j} is not finite")


def check_unique_ids(ids: Sequence[str], field: str) -> None:
    """InvalidArgument naming both positions of the first repeated (or empty) id."""
    seen: dict[str, int] = {}
    for i, item_id in enumerate(ids):
        if not item_id:
            raise InvalidArgument(f"{field}[{i}].id", "is empty; every item needs an id")
        if item_id in seen:
            raise InvalidArgument(f"{field}[{i}].id", f"'{item_id}' repeats {field}[{seen[item_id]}].id")
        seen[item_id] = i


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)
