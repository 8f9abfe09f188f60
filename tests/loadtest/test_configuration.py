"""The load test's configuration: the load's shape, the generator's spec, the service's
configuration, and what the sampler reads from the service's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oraculo_trio.errors import ConfigError
from oraculo_trio.loadtest.cli import build_parser, config_from, loadtest_main
from oraculo_trio.loadtest.configuration import RunConfig, service_config
from oraculo_trio.loadtest.sampling import book_section
from oraculo_trio.loadtest.shape import GeneratorSpec, LoadShape, build_source
from oraculo_trio.mockexchange import DiffBookMarket
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.report import parse_samples


def test_the_options_make_one_shape_that_crosses_to_the_generator_as_json() -> None:
    parser = build_parser()
    args = ["mixed", "2000", "--duration", "7", "--tick-ms", "50", "--batch", "40", "--seed", "3"]
    config = config_from(parser.parse_args(args))
    shape = config.shape
    assert (shape.stream, shape.rate, shape.duration) == ("mixed", 2000.0, 7.0)
    assert shape.tick == 0.05
    assert shape.burst_period == 40 / 2000.0
    spec = config.generator_spec()
    assert GeneratorSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["shape"]["seed"] == 3
    # The artifacts' configuration stays one flat mapping.
    flat = config.as_dict()
    assert flat["stream"] == "mixed"
    assert flat["tick"] == 0.05
    assert "shape" not in flat


def test_book_section_reads_the_services_metrics() -> None:
    metrics = ServiceMetrics()
    metrics.book_resyncs["gap"].inc(3)
    metrics.book_resyncs["crossed"].inc()
    for seconds in (0.2, 0.3, 0.4, 3.0):
        metrics.book_resync_seconds.observe(seconds)
    metrics.rest_weight_used.inc(250)
    section = book_section(parse_samples(metrics.exposition().decode()))
    assert section["resyncs"] == 4
    assert section["resyncs_by_reason"] == {"gap": 3, "crossed": 1, "snapshot_stale": 0, "shed": 0}
    assert 0.25 <= section["resync_seconds"]["p50"] <= 0.5
    assert 2.0 <= section["resync_seconds"]["p99"] <= 5.0
    assert section["rest_weight_used"] == 250
    assert section["symbols"] == {"syncing": 0, "live": 0}


def test_depthdiff_is_a_load_test_stream_with_its_faults() -> None:
    parser = build_parser()
    config = config_from(parser.parse_args(["depthdiff", "1500", "--faults", "gaps,dups"]))
    config.check()
    source = build_source(config.shape)
    assert isinstance(source, DiffBookMarket)
    assert source.faults is not None
    assert source.faults.kinds == {"gaps", "dups"}
    assert source.depth_kinds == ("depth",)
    # The service's default snapshots (1000 levels, weight 50) hold the whole true book.
    assert source.service_settings == {}
    with pytest.raises(ConfigError, match="fault 'lag'"):
        config_from(parser.parse_args(["depthdiff", "10", "--faults", "lag"])).check()


def test_the_runner_applies_the_sources_settings_under_set(tmp_path) -> None:
    def sections(*settings: str) -> dict:
        return service_config(
            RunConfig(LoadShape(stream="depthdiff"), settings=settings),
            exchange_url="ws://127.0.0.1:1",
            symbols=["AAAUSDT"],
            depth_kinds=["depth"],
            trade_kinds=[],
            database_url="sqlite:///x.db",
            rules_file="rules.toml",
            webhook_url=None,
            scratch=tmp_path,
            rest_url="http://127.0.0.1:2",
            source_settings={"feed": {"snapshot_limit": 100}},
        )

    assert sections()["feed"]["snapshot_limit"] == 100
    assert sections()["feed"]["rest_url"] == "http://127.0.0.1:2"
    assert sections("feed.snapshot_limit=500")["feed"]["snapshot_limit"] == "500"
    # The service picks its port; the runner reads it from the service's log.
    assert sections()["http"] == {"host": "127.0.0.1", "port": 0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--set", "feed.nope=1"], "--set: unknown key 'feed.nope'"),
        (["--set", "pipeline.shards=many"], "pipeline.shards"),
        (["--set", "shards=2"], "expected SECTION.KEY=VALUE"),
        (["--set", "service.log_level=WARNING"], "use INFO or DEBUG"),
        (["--rules", "/nonexistent/rules.toml"], "--rules: rule file /nonexistent/rules.toml"),
        (["--database-url", "mysql://x"], "expected a postgresql:// URL"),
        (["--threshold", "nonsense < 1"], "unknown KPI"),
        (["--junit", "/nonexistent/out.xml"], "--junit /nonexistent/out.xml: its folder"),
    ],
)
def test_every_option_is_checked_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    out = tmp_path / "out"
    code = loadtest_main(["depth", "100", "--out", str(out), *options])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("oraculo-trio loadtest: error: ") and message in err, err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "nothing is written for a run that never started"
