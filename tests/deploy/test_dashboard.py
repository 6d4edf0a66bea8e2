"""The Grafana dashboard is well formed: no Grafana server runs here, so its structure is checked
(its queries run against a real Prometheus in test_stack.py, its metric names in test_metrics.py)."""

from __future__ import annotations

import json
import re

from tests.deploy.tools import DASHBOARD


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"{p['title']} overlaps another panel"
        cells |= area


def test_queries_use_defined_variables_and_rate_intervals():
    d = dashboard()
    defined = {v["name"] for v in d["templating"]["list"]} | {"__rate_interval"}
    for p in d["panels"]:
        for t in p.get("targets", []):
            used = set(re.findall(r"\$(\w+)", t["expr"]))
            assert used <= defined, (p["title"], used - defined)
            assert t["datasource"]["uid"] == "${datasource}"
            for window in re.findall(r"\[([^\]]+)\]", t["expr"]):
                assert window == "$__rate_interval", f"{p['title']}: fixed window [{window}]"
            assert 'namespace=~"$namespace"' in t["expr"], f"{p['title']} ignores the namespace variable"
    assert d["uid"] == "likeness-overview" and d["title"] == "Likeness"
