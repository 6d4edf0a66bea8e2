"""Balanced selection (the last stage of curation): choose `count` candidates maximising total quality
subject to per-group minimum and maximum counts (per seed, per cluster, per image type, ...).

EXACT solves the 0-1 integer program with HiGHS (`scipy.optimize`):

    maximise  sum_i q_i x_i   s.t.  sum_i x_i = count,
              min_g <= sum_{i in g} x_i <= max_g  for every quota g,   x_i in {0, 1}.

Candidates that cannot be in any optimum are pruned first, and the LP relaxation is tried before
branch and bound: with one or two quota dimensions it is already integral (see `_solve_program`).
5,000 of 100,000 then takes seconds instead of minutes.

GREEDY is the baseline it is compared with: best quality first, skipping a candidate whose group
is full or whose taking would leave too few slots for unmet minimums; it can fail where EXACT
succeeds. An infeasible request never yields a silently unbalanced set: simple conflicts are named
directly, and the rest by a deletion filter that shrinks the quota set to an irreducible
infeasible subset (every quota in it is needed for the conflict).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from likeness.core.errors import FailedPrecondition, InvalidArgument
from likeness.embedding.vectors import check_unique_ids

MAX_CANDIDATES = 100_000
ALL_GROUPS = "*"
SOLVER_SECONDS = 60.0
DIAGNOSIS_SECONDS = 20.0  # budget of the deletion filter that names conflicting quotas


@dataclass(frozen=True)
class Candidate:
    id: str
    quality: float
    groups: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Quota:
    dimension: str
    group: str  # "*" = every group of the dimension
    min: int = 0
    max: int = 0  # 0 = no maximum


@dataclass
class Selection:
    selected_ids: list[str]  # best quality first
    total_quality: float
    counts: dict[tuple[str, str], int]  # (dimension, group) -> selected, for every quota dimension
    method: str  # exact | greedy


@dataclass(frozen=True)
class _Bound:
    """One quota applied to one concrete group; `source` is the index of the request quota."""
    source: int
    dimension: str
    group: str
    lo: int
    hi: int  # size of the group when uncapped
    members: np.ndarray

    def describe(self) -> str:
        cap = f" max {self.hi}" if self.hi < len(self.members) else ""
        return (f"quotas[{self.source}] {self.dimension}={self.group} "
                f"(min {self.lo}{cap}, {len(self.members)} candidates)")


def select(candidates: list[Candidate], count: int, quotas: list[Quota], method: str = "exact") -> Selection:
    n = len(candidates)
    if n == 0:
        raise InvalidArgument("candidates", "is empty; at least 1 required")
    if n > MAX_CANDIDATES:
        raise InvalidArgument("candidates", f"has {n} items, over the limit of {MAX_CANDIDATES}")
    if not 1 <= count <= n:
        raise InvalidArgument("count", f"{count} is outside [1, {n}] (the number of candidates)")
    check_unique_ids([c.id for c in candidates], "candidates")
    quality = np.array([c.quality for c in candidates], dtype=np.float64)
    if not np.isfinite(quality).all():
        i = int(np.flatnonzero(~np.isfinite(quality))[0])
        raise InvalidArgument(f"candidates[{i}].quality", f"{quality[i]} is not finite")
    bounds = _bounds(candidates, quotas)
    _check_simple_conflicts(bounds, count, n)
    if method == "exact":
        chosen = _solve_exact(quality, count, bounds)
        if chosen is None:
            raise InvalidArgument("quotas", "cannot all be met together: " + _conflict(quality, count, bounds))
    elif method == "greedy":
        chosen = _solve_greedy(quality, count, bounds)
        if chosen is None:
            if _solve_exact(quality, count, bounds) is None:
                raise InvalidArgument("quotas", "cannot all be met together: " + _conflict(quality, count, bounds))
            raise FailedPrecondition("method", f"greedy selection could not fill {count} items within the "
                                               "quotas, which the exact method (SELECT_METHOD_EXACT) can")
    else:
        raise InvalidArgument("method", f"'{method}' is not one of exact, greedy")
    chosen = sorted(chosen, key=lambda i: (-quality[i], i))
    dims = {b.dimension for b in bounds}
    counts = {}
    for dim in sorted(dims):
        groups = sorted({c.groups[dim] for c in candidates})
        for g in groups:
            counts[(dim, g)] = 0
        for i in chosen:
            counts[(dim, candidates[i].groups[dim])] += 1
    return Selection(selected_ids=[candidates[i].id for i in chosen],
                     total_quality=float(quality[chosen].sum()), counts=counts, method=method)


def _bounds(candidates: list[Candidate], quotas: list[Quota]) -> list[_Bound]:
    members: dict[str, dict[str, list[int]]] = {}
    for qi, q in enumerate(quotas):
        if not q.dimension:
            raise InvalidArgument(f"quotas[{qi}].dimension", "is empty")
        if not q.group:
            raise InvalidArgument(f"quotas[{qi}].group", f"is empty; name a group or '{ALL_GROUPS}'")
        if q.min < 0 or q.max < 0:
            raise InvalidArgument(f"quotas[{qi}]", f"min {q.min} and max {q.max} must be >= 0")
        if q.max and q.min > q.max:
            raise InvalidArgument(f"quotas[{qi}].min", f"{q.min} is above max {q.max}")
        if q.dimension not in members:
            groups: dict[str, list[int]] = defaultdict(list)
            for i, c in enumerate(candidates):
                if q.dimension not in c.groups:
                    raise InvalidArgument(f"candidates[{i}].groups",
                                          f"has no '{q.dimension}', which quotas[{qi}] constrains")
                groups[c.groups[q.dimension]].append(i)
            members[q.dimension] = groups
    named: dict[tuple[str, str], int] = {}
    for qi, q in enumerate(quotas):
        if (q.dimension, q.group) in named:
            raise InvalidArgument(f"quotas[{qi}]", f"repeats quotas[{named[(q.dimension, q.group)]}] "
                                                   f"({q.dimension}={q.group}); give one quota per group")
        named[(q.dimension, q.group)] = qi
    bounds: dict[tuple[str, str], _Bound] = {}
    # a quota for a named group overrides a '*' quota of the same dimension, whatever the order
    for qi, q in sorted(enumerate(quotas), key=lambda e: e[1].group != ALL_GROUPS):
        groups = members[q.dimension]
        if q.group == ALL_GROUPS:
            names = list(groups)
        elif q.group in groups:
            names = [q.group]
        elif q.min > 0:
            raise InvalidArgument(f"quotas[{qi}]", f"min {q.min} for {q.dimension}={q.group}, "
                                                   "but no candidate is in that group")
        else:
            names = []
        for g in names:
            idx = np.array(groups[g], dtype=np.int64)
            hi = min(q.max, len(idx)) if q.max else len(idx)
            bounds[(q.dimension, g)] = _Bound(qi, q.dimension, g, q.min, hi, idx)
    return list(bounds.values())


def _check_simple_conflicts(bounds: list[_Bound], count: int, n: int) -> None:
    """Conflicts that one quota or one dimension shows alone, named precisely."""
    for b in bounds:
        if b.lo > len(b.members):
            raise InvalidArgument(f"quotas[{b.source}].min", f"{b.lo} for {b.dimension}={b.group}, but the "
                                                             f"group has only {len(b.members)} candidates")
    by_dim: dict[str, list[_Bound]] = defaultdict(list)
    for b in bounds:
        by_dim[b.dimension].append(b)
    for dim, bs in by_dim.items():
        sources = sorted({b.source for b in bs})
        lo = sum(b.lo for b in bs)
        if lo > count:
            raise InvalidArgument("quotas", f"minimums of dimension '{dim}' sum to {lo}, above count {count} "
                                            f"(quotas {sources})")
        # the maximums cap the total only when every candidate is in a bounded group of the dimension
        hi = sum(b.hi for b in bs)
        if sum(len(b.members) for b in bs) == n and hi < count:
            raise InvalidArgument("quotas", f"maximums of dimension '{dim}' allow at most {hi} items, "
                                            f"below count {count} (quotas {sources})")


def _solve_exact(quality: np.ndarray, count: int, bounds: list[_Bound]) -> list[int] | None:
    """The optimum (candidate indices), or None when the quotas are infeasible."""
    keep = _prunable_to(quality, count, bounds)
    position = np.full(len(quality), -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    sub = [(position[b.members[position[b.members] >= 0]], b.lo, b.hi) for b in bounds]
    chosen = _solve_program(quality[keep], count, sub)
    return None if chosen is None else [int(keep[i]) for i in chosen]


def _prunable_to(quality: np.ndarray, count: int, bounds: list[_Bound]) -> np.ndarray:
    """Candidates that can be in an optimum. Candidates in exactly the same groups are
    interchangeable but for quality, and no feasible set takes more of them than the smallest cap
    of their groups (or `count`); any feasible set can swap in the best of them instead, so only
    those need to stay. Exact, and it shrinks large pools with tight caps a lot."""
    n = len(quality)
    signature = np.zeros((n, len(bounds)), dtype=bool)
    cap = np.full(n, count, dtype=np.int64)
    for j, b in enumerate(bounds):
        signature[b.members, j] = True
        cap[b.members] = np.minimum(cap[b.members], b.hi)
    _, classes = np.unique(np.packbits(signature, axis=1), axis=0, return_inverse=True)
    classes = classes.ravel()
    order = np.lexsort((np.arange(n), -quality, classes))  # by class, best first (ties: input order)
    sorted_classes = classes[order]
    starts = np.flatnonzero(np.r_[True, sorted_classes[1:] != sorted_classes[:-1]])
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.sort(order[rank < cap[order]])


def _solve_program(quality: np.ndarray, count: int, bounds: list[tuple[np.ndarray, int, int]]) -> list[int] | None:
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp
    from scipy.sparse import csr_array, vstack

    n = len(quality)
    rows, cols, lo, hi = [np.zeros(n, dtype=np.int64)], [np.arange(n)], [count], [count]
    for r, (members, b_lo, b_hi) in enumerate(bounds, start=1):
        rows.append(np.full(len(members), r))
        cols.append(members)
        lo.append(b_lo)
        hi.append(b_hi)
    data = np.ones(sum(len(c) for c in cols))
    a = csr_array((data, (np.concatenate(rows), np.concatenate(cols))), shape=(len(bounds) + 1, n))
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    # The LP relaxation first (dual simplex, so the answer is a vertex). With one or two quota
    # dimensions the constraint matrix is totally unimodular (two laminar families), every vertex
    # is integral, and the LP optimum IS the exact optimum, found far faster than by branch and bound.
    lp = linprog(-quality, A_ub=vstack([a, -a]).tocsr(), b_ub=np.r_[hi, -lo], bounds=(0, 1), method="highs-ds",
                 options={"time_limit": SOLVER_SECONDS})
    if lp.status == 2:  # the relaxation is infeasible, so is the integer program
        return None
    if lp.status == 0 and np.all(np.minimum(lp.x, 1 - lp.x) < 1e-9):
        return [int(i) for i in np.flatnonzero(lp.x > 0.5)]
    # mip_rel_gap 0: HiGHS otherwise stops within 0.01% of the optimum; "exact" means exact
    result = milp(-quality, constraints=LinearConstraint(a, lo, hi), integrality=np.ones(n),
                  bounds=Bounds(0, 1), options={"disp": False, "mip_rel_gap": 0.0, "time_limit": SOLVER_SECONDS})
    if result.status == 2:  # infeasible
        return None
    if result.status != 0 or result.x is None:
        raise FailedPrecondition("candidates", f"the selection solver found no proven optimum within "
                                               f"{SOLVER_SECONDS:g} s: {result.message}")
    return [int(i) for i in np.flatnonzero(result.x > 0.5)]


def _conflict(quality: np.ndarray, count: int, bounds: list[_Bound]) -> str:
    """Deletion filter: drop each bound whose removal keeps the problem infeasible; what is left
    is an irreducible infeasible subset (with the constraint that exactly `count` are chosen)."""
    needed = list(bounds)
    deadline = time.monotonic() + DIAGNOSIS_SECONDS
    complete = True
    for b in list(needed):
        if time.monotonic() > deadline:
            complete = False  # large pools: report what is known rather than keep the caller waiting
            break
        trial = [x for x in needed if x is not b]
        if _solve_exact(quality, count, trial) is None:
            needed = trial
    listed = "; ".join(b.describe() for b in needed)
    if complete:
        return f"choosing exactly {count} items conflicts with {listed} (relax any one of these)"
    return (f"choosing exactly {count} items conflicts with some of {listed} (diagnosis stopped after "
            f"{DIAGNOSIS_SECONDS:g} s; not every quota listed is needed for the conflict)")


def _solve_greedy(quality: np.ndarray, count: int, bounds: list[_Bound]) -> list[int] | None:
    n = len(quality)
    member_of: list[list[int]] = [[] for _ in range(n)]
    for bi, b in enumerate(bounds):
        for i in b.members:
            member_of[i].append(bi)
    taken = np.zeros(len(bounds), dtype=np.int64)
    lo = np.array([b.lo for b in bounds], dtype=np.int64)
    hi = np.array([b.hi for b in bounds], dtype=np.int64)
    dims = sorted({b.dimension for b in bounds})
    dim_of = np.array([dims.index(b.dimension) for b in bounds], dtype=np.int64)

    def deficit(t: np.ndarray) -> int:
        short = np.maximum(lo - t, 0)
        return int(max((short[dim_of == d].sum() for d in range(len(dims))), default=0))

    chosen: list[int] = []
    for i in np.argsort(-quality, kind="stable"):
        if len(chosen) == count:
            break
        groups = member_of[i]
        if any(taken[g] >= hi[g] for g in groups):
            continue
        after = taken.copy()
        after[groups] += 1
        if deficit(after) > count - len(chosen) - 1:
            continue
        taken = after
        chosen.append(int(i))
    if len(chosen) < count or deficit(taken) > 0:
        return None
    return chosen
