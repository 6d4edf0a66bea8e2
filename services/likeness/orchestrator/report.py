"""HTML job reports: one self-contained file (thumbnails inlined as data URIs, charts as inline
SVG) so it opens from the store in any browser with no server and no network.

Workflows describe their report as sections (Outcome.report["sections"]):
  {"type": "table", "title", "columns": [...], "rows": [[...], ...]}
  {"type": "gallery", "title", "groups": [{"name", "items": [{"uri", "caption"}]}]}
  {"type": "bars", "title", "unit", "data": [[label, value], ...]}
  {"type": "text", "title", "body"}
"""

from __future__ import annotations

import base64
import io
import logging
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

log = logging.getLogger("likeness.orchestrator.report")
THUMB = 112

_env = Environment(loader=PackageLoader("likeness.orchestrator", "templates"), autoescape=select_autoescape(["html", "j2"]))


def thumbnail_data_uri(data: bytes, size: int = THUMB) -> str:
    with Image.open(io.BytesIO(data)) as im:
        return thumbnail_of(im, size)


def thumbnail_of(im: Image.Image, size: int = THUMB) -> str:
    """A decoded image as the report's inline JPEG thumbnail."""
    im = im.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _bars_svg(data: list, unit: str = "") -> dict:
    values = [float(v) for _, v in data] or [0.0]
    top = max(max(values), 1e-9)
    return {"rows": [{"label": str(label), "value": float(v), "width": 300.0 * float(v) / top} for label, v in data],
            "unit": unit, "height": 22 * len(data) + 4}


def render_report(job, outcome, timings: dict[str, float], warnings: list[str], store=None, *, state: str = "",
                  reason: str = "", models=None) -> str:
    """`state` and `reason` head the report; `models` (a provenance.ModelLedger) names the model behind
    every figure, and each stand-in is announced at the top in plain words."""
    sections = []
    for section in outcome.report.get("sections", []):
        s = dict(section)
        if s["type"] == "gallery":
            groups = []
            for g in s["groups"]:
                items = []
                for it in g["items"]:
                    src = it.get("src", "")  # made by the workflow already (workflows/image_facts.py)
                    data = None if src else it.get("data")
                    if not src and data is None and store is not None and it.get("uri"):
                        try:
                            data = store.get(it["uri"])
                        except Exception as exc:  # a missing thumbnail must not lose the report
                            log.warning("thumbnail unavailable", extra={"uri": it["uri"], "error": str(exc)})
                    if data:
                        try:
                            src = thumbnail_data_uri(data)
                        except Exception:
                            src = ""
                    items.append({**it, "src": src})
                groups.append({"name": g["name"], "items": items})
            s["groups"] = groups
        elif s["type"] == "bars":
            s["chart"] = _bars_svg(s["data"], s.get("unit", ""))
        sections.append(s)
    timing_rows = [[k, f"{v:.3f}"] for k, v in timings.items()]
    return _env.get_template("report.html.j2").render(
        job=job, summary=outcome.summary, sections=sections, timings=timing_rows, warnings=warnings,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), state=state or job.state,
        reason=reason or outcome.failure or outcome.note, stand_ins=models.warnings() if models else [],
        models=models.as_list() if models else [])
