"""The README documents every metric and walks through every query of the runbook."""

from __future__ import annotations

from oraculo_trio.observe.catalog import (
    TABLE_END,
    TABLE_START,
    markdown_row,
    markdown_table,
    metric_catalog,
    replace_table,
)
from tests.observe.prometheus_testing import REPO, runbook_queries

README = REPO / "README.md"


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    missing = [spec.name for spec in metric_catalog() if markdown_row(spec) not in table]
    assert not missing, f"README.md lists {missing} otherwise or not at all"
    assert table == markdown_table(metric_catalog()), (
        "README.md's metrics table is stale: run python -m oraculo_trio.observe.catalog "
        "--readme README.md"
    )


def test_the_runbook_walks_through_every_runbook_query() -> None:
    runbook = section(README.read_text(encoding="utf-8"), "Runbook: is it CPU-bound or GIL-bound?")
    for expr in runbook_queries():
        assert f"`{expr}`" in runbook, expr


def test_the_table_is_replaced_between_its_markers_only() -> None:
    text = f"before\n{TABLE_START}\nold\n{TABLE_END}\nafter\n"
    assert replace_table(text, "new") == f"before\n{TABLE_START}\nnew\n{TABLE_END}\nafter\n"
