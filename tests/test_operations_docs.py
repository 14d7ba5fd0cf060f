"""The README's Operations section and the sample Grafana dashboard name only
metrics the server exposes, and the README describes every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from extauth.metrics import LinkCounts, _Instruments
from extauth.store import open_store

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DASHBOARD = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
OPERATIONS = README[README.index("## Operations"):README.index("## Performance")]
_NAME = re.compile(r"\bextauth_[a-z_]+\b")


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Each metric family the server exposes, with the sample names it shows."""
    families: dict[str, set[str]] = {}
    instruments = _Instruments()
    for metric in vars(instruments).values():
        for family in metric.describe():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                        "gauge": [""]}[family.type]
            name = family.name + ("_total" if family.type == "counter" else "")
            families[name] = {family.name + s for s in suffixes}
    store = open_store(tmp_path_factory.mktemp("links") / "x.db")
    store.migrate()
    for family in LinkCounts(store).collect():
        families[family.name] = {family.name}
    return families


def test_the_readme_describes_every_metric(exposed: dict[str, set[str]]) -> None:
    table = {m for m in re.findall(r"^\| `(extauth_[a-z_]+)` \|", OPERATIONS, re.M)}
    assert table == set(exposed)


def test_the_readme_and_the_dashboard_name_only_exposed_metrics(
        exposed: dict[str, set[str]]) -> None:
    known = set().union(*exposed.values())
    expressions = [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]
    used = {n for e in expressions for n in _NAME.findall(e)}
    used |= set(_NAME.findall(OPERATIONS.split("```promql")[1].split("```")[0]))
    assert used and used <= known, used - known


def test_the_dashboard_has_the_three_first_panels() -> None:
    titles = [p["title"] for p in DASHBOARD["panels"]]
    for first in ("Request errors", "Provider errors", "Provider rate limit", "Refresh failures"):
        assert any(t.startswith(first) for t in titles), first
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(titles)
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
               for p in DASHBOARD["panels"])
