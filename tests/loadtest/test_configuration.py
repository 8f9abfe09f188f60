"""The load test's configuration: the load's shape, the generator's spec, the service's
configuration, and what the sampler reads from the service's metrics."""

from __future__ import annotations

import json

import pytest

from oraculo_trio.errors import ConfigError
from oraculo_trio.loadtest.cli import build_parser, config_from
from oraculo_trio.loadtest.configuration import RunConfig, service_sections
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
    assert section["resyncs_by_reason"] == {"gap": 3, "crossed": 1, "snapshot_stale": 0}
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
        return service_sections(
            RunConfig(LoadShape(stream="depthdiff"), settings=settings),
            exchange_url="ws://127.0.0.1:1",
            symbols=["AAAUSDT"],
            depth_kinds=["depth"],
            trade_kinds=[],
            database_url="sqlite:///x.db",
            http_port=1,
            rules_file="rules.toml",
            webhook_url=None,
            scratch=tmp_path,
            rest_url="http://127.0.0.1:2",
            source_settings={"feed": {"snapshot_limit": 100}},
        )

    assert sections()["feed"]["snapshot_limit"] == 100
    assert sections()["feed"]["rest_url"] == "http://127.0.0.1:2"
    assert sections("feed.snapshot_limit=500")["feed"]["snapshot_limit"] == "500"
