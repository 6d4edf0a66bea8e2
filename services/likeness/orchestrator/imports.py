"""The layout of a curate job's import source, checked at Submit and again when the job reads it.

Every image under the prefix sits at `<seed>/<image_type>/<name>.<ext>`, or every image sits
directly under the prefix (`<name>.<ext>`: seed `0`, image type `original`). Anything else (a
prefix one level too high or too low, a mix of both layouts), no image at all, or two images whose
candidate ids coincide is refused with INVALID_ARGUMENT showing the expected layout and the keys at
fault, so a caller's layout mistake never becomes a job failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from likeness.core.errors import InvalidArgument
from likeness.orchestrator.workflows.common import IMAGE_SUFFIXES, safe_name

FIELD = "spec.curate.import_source.uri"
LAYOUT = "expected <uri>/<seed>/<image_type>/<name>.png (or every image directly under <uri>)"


@dataclass(frozen=True)
class ImportItem:
    key: str
    id: str
    seed: str
    image_type: str


def _refuse(uri: str, problem: str) -> InvalidArgument:
    return InvalidArgument(FIELD, f"'{uri}': {problem}; {LAYOUT}")


def layout(uri: str, prefix: str, keys: list[str]) -> list[ImportItem]:
    """The candidates of the image keys under `prefix` (a store key ending in '/' or empty)."""
    images = sorted(k for k in keys if k.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        other = f" (found {len(keys):,} other objects, for example '{keys[0]}')" if keys else ""
        raise _refuse(uri, f"holds no PNG, JPEG or WebP image{other}")
    depths: dict[int, str] = {}
    for key in images:
        depths.setdefault(key[len(prefix):].count("/") + 1, key)
    wrong = {d: k for d, k in depths.items() if d not in (1, 3)}
    if wrong:
        depth, key = min(wrong.items())
        hint = ""
        if depth > 3:
            below = key[len(prefix):].split("/")[0]
            hint = f"; if the layout starts one level lower, import '{uri.rstrip('/')}/{below}/'"
        raise _refuse(uri, f"'{key[len(prefix):]}' is {depth} levels below it{hint}")
    if len(depths) > 1:
        raise _refuse(uri, f"mixes images directly under it ('{depths[1][len(prefix):]}') with "
                           f"<seed>/<image_type>/ folders ('{depths[3][len(prefix):]}')")
    out, seen = [], {}
    for key in images:
        rel = key[len(prefix):]
        parts = rel.split("/")
        seed, image_type = (parts[0], parts[1]) if len(parts) == 3 else ("0", "original")
        id_ = safe_name(rel.rsplit(".", 1)[0])
        if id_ in seen:
            raise _refuse(uri, f"'{seen[id_]}' and '{rel}' give the same candidate id '{id_}' "
                               "(ids keep letters, digits, '-' and '_' of the first 80 characters)")
        seen[id_] = rel
        out.append(ImportItem(key, id_, seed, image_type))
    return out
