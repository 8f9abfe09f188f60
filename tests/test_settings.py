"""Configuration: every key validated, errors name the key, unknown keys are refused."""

import re
from pathlib import Path

import pytest

from oraculo_trio.cli import build_parser
from oraculo_trio.errors import ConfigError
from oraculo_trio.settings import (
    SECTIONS,
    configuration_reference,
    exposed_secrets,
    find_config,
    load_settings,
)

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oraculo.toml"
    path.write_text(text)
    return path


def test_shipped_config_loads() -> None:
    settings = load_settings(ROOT / "oraculo.toml", environ={})
    assert settings.feed.symbols[:5] == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
    # Relative paths are the configuration file's.
    assert settings.database.url == f"sqlite:///{ROOT / 'var' / 'oraculo.db'}"
    assert settings.rules.file == str(ROOT / "rules.toml")
    assert settings.dispatch.sinks == ("stdout",)
    assert settings.http.port == 9108


def test_defaults_without_a_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.pipeline.shards == 4
    assert settings.pipeline.channel_capacity == 1024
    assert settings.pipeline.batch_max == 256
    assert settings.pipeline.stale_after == 5.0


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///a.db"\n[pipeline]\nshards = 2\n')
    env = {
        "ORACULO_DATABASE_URL": "postgresql://postgres@127.0.0.1/x",
        "ORACULO_PIPELINE_SHARDS": "8",
    }
    settings = load_settings(path, environ=env)
    assert settings.database.url == "postgresql://postgres@127.0.0.1/x"
    assert settings.pipeline.shards == 8


def test_list_from_environment() -> None:
    settings = load_settings(None, environ={"ORACULO_FEED_SYMBOLS": "btcusdt, ethusdt"})
    assert settings.feed.symbols == ("BTCUSDT", "ETHUSDT")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[pipeline]\nshards = 0\n", "pipeline.shards = 0"),
        ("[pipeline]\nshards = 'four'\n", "pipeline.shards = 'four'"),
        ("[pipeline]\nstale_after = -1.0\n", "pipeline.stale_after = -1.0"),
        ("[feed]\nurl = 'http://x'\n", "feed.url = 'http://x'"),
        ("[feed]\ndepth_streams = ['depth7']\n", "feed.depth_streams"),
        ("[feed]\nsymbols = []\n", "feed.symbols"),
        ("[database]\nurl = 'mysql://x'\n", "database.url = 'mysql://x'"),
        ("[http]\nport = 70000\n", "http.port = 70000"),
        ("[dispatch]\nsinks = ['pager']\n", "dispatch.sinks"),
        ("[pipeline]\nshardz = 4\n", "pipeline.shardz"),
        ("[pipline]\nshards = 4\n", "[pipline]"),
        ("[feed]\nreconnect_initial = 60.0\n", "feed.reconnect_initial = 60.0"),
        ("[dispatch]\nsinks = ['webhook']\n", "dispatch.webhook_url"),
        ("not toml =", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), environ={})
    assert named in str(raised.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORACULO_PIPELINE_SHARDZ": "1"}, "pipeline.shardz"),
        ({"ORACULO_HTTP_PORT": "x"}, "http.port = 'x'"),
        ({"ORACULO_DATABASE_RETENTION": "soon"}, "database.retention = 'soon'"),
    ],
)
def test_bad_environment_names_the_variable(env: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("'", ".")):
        load_settings(None, environ=env)


def test_test_variables_are_not_configuration() -> None:
    env = {"ORACULO_TEST_DATABASE_URL": "x", "ORACULO_REQUIRE_SERVICES": "1", "ORACULO_CONFIG": "y"}
    assert load_settings(None, environ=env).pipeline.shards == 4


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_run_help_documents_every_key() -> None:
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    text = run.format_help()
    for option in ("--config", "--database-url", "--http-port", "--log-level"):
        assert option in text
    reference = configuration_reference()
    for section, cls in SECTIONS.items():
        for field in cls.__attrs_attrs__:
            assert f"ORACULO_{section.upper()}_{field.name.upper()}" in reference
            assert f"ORACULO_{section.upper()}_{field.name.upper()}" in text


# --------------------------------------------------------------------------------------
# Markets: one [feed] table, or one [[feed]] table per market

TWO_MARKETS = """
[[feed]]
market = "spot"
symbols = ["BTCUSDT"]

[[feed]]
market = "usdm"
symbols = ["btcusdt", "ETHUSDT_250328"]
depth_streams = ["depth"]
trade_streams = ["aggTrade"]
futures_streams = ["markPrice", "forceOrder"]
depth_update_ms = 500
"""


def test_one_feed_table_per_market(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, TWO_MARKETS), environ={"ORACULO_FEED_CLIENT": "native"}
    )
    assert [feed.market for feed in settings.feeds] == ["spot", "usdm"]
    assert settings.feed.market == "spot"
    assert settings.symbols == ("BTCUSDT", "usdm:BTCUSDT", "usdm:ETHUSDT_250328")
    assert settings.feed_of("usdm:BTCUSDT").depth_update_ms == 500
    assert settings.feed_of("BTCUSDT").market == "spot"


FEED_PROBLEMS = [
    (
        'market = "usdm"\ntrade_streams = ["trade"]',
        "feed.trade_streams = ['trade'] is not allowed: Binance USD-M futures offers 'aggTrade'",
    ),
    (
        'futures_streams = ["markPrice"]',
        "feed.futures_streams = ['markPrice'] is not allowed: Binance spot offers none",
    ),
    (
        'market = "coinm"\nsymbols = ["BTCUSD"]\ntrade_streams = ["aggTrade"]',
        "feed.symbols: 'BTCUSD' is not allowed: Binance COIN-M futures symbols look like "
        "'BTCUSD_PERP'",
    ),
    (
        "depth_update_ms = 250",
        "feed.depth_update_ms = 250 is not allowed: Binance spot offers 100, 1000",
    ),
    (
        'market = "usdm"\ntrade_streams = ["aggTrade"]\nsnapshot_limit = 200',
        "feed.snapshot_limit = 200 is not allowed",
    ),
    (
        "rest_weight_budget = 7000",
        "feed.rest_weight_budget = 7000 is not allowed: Binance spot allows an IP 6000",
    ),
    ('market = "binance"', "feed.market = 'binance'"),
    ('symbols = ["usdm:BTCUSDT"]', "the market is feed.market"),
]


@pytest.mark.parametrize(("feed", "named"), FEED_PROBLEMS)
def test_a_feed_is_checked_against_its_market(tmp_path: Path, feed: str, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(write(tmp_path, f"[feed]\n{feed}\n"), environ={})


def test_a_local_feed_may_open_its_rest_budget(tmp_path: Path) -> None:
    # A mock or a replay on this host is not Binance: its REST budget is the user's call (a
    # benchmark opens it so that every book syncs during a short warm-up).
    feed = (
        'url = "ws://127.0.0.1:9443"\nrest_url = "http://127.0.0.1:9443"\n'
        'depth_streams = ["depth"]\ntrade_streams = []\n'
        "rest_weight_budget = 1000000\nsnapshot_stagger = 0.0\n"
    )
    settings = load_settings(write(tmp_path, f"[feed]\n{feed}"), environ={})
    assert settings.feed.rest_weight_budget == 1_000_000
    pointed_at_binance = feed.replace("http://127.0.0.1:9443", "https://api.binance.com")
    with pytest.raises(ConfigError, match="Binance spot allows an IP 6000"):
        load_settings(write(tmp_path, f"[feed]\n{pointed_at_binance}"), environ={})


def test_feed_tables_and_relative_paths_together(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_MARKETS + '\n[rules]\nfile = "r.toml"\n')
    settings = load_settings(path, environ={"ORACULO_FEED_CLIENT": "native"})
    assert [feed.client for feed in settings.feeds] == ["native", "native"]
    assert settings.rules.file == str(tmp_path / "r.toml")


def test_two_tables_of_one_market_are_refused(tmp_path: Path) -> None:
    text = '[[feed]]\nsymbols = ["BTCUSDT"]\n[[feed]]\nsymbols = ["ETHUSDT"]\n'
    with pytest.raises(ConfigError, match=r"feed\[1\].market = 'spot' is not allowed"):
        load_settings(write(tmp_path, text), environ={})


def test_an_override_naming_what_a_feed_follows_is_ambiguous_with_several(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_MARKETS)
    with pytest.raises(ConfigError, match=r"feed\.symbols from the environment cannot apply"):
        load_settings(path, environ={"ORACULO_FEED_SYMBOLS": "SOLUSDT"})
    # A key every feed may share applies to each.
    settings = load_settings(path, environ={"ORACULO_FEED_STALL_TIMEOUT": "12"})
    assert [feed.stall_timeout for feed in settings.feeds] == [12.0, 12.0]


def test_a_market_gives_its_bases_and_budget() -> None:
    from oraculo_trio.feeds.binance_rest import rest_base_url, ws_base_url
    from oraculo_trio.settings import rest_weight_budget

    coinm = {
        "market": "coinm",
        "symbols": ["BTCUSD_PERP"],
        "trade_streams": ["aggTrade"],
        "depth_streams": [],
    }
    settings = load_settings(None, environ={}, overrides={"feed": coinm})
    feed = settings.feed
    assert ws_base_url(feed.url, feed.market) == "wss://dstream.binance.com"
    assert rest_base_url(feed.rest_url, feed.url, feed.market) == "https://dapi.binance.com"
    assert rest_weight_budget(feed) == 1200
    assert settings.symbols == ("coinm:BTCUSD_PERP",)


def test_other_oraculo_variables_draw_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    env = {"ORACULO_BIN": "/usr/bin/oraculo-trio", "ORACULO_PIPLINE_SHARDS": "1"}
    assert load_settings(None, environ=env).pipeline.shards == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert "ORACULO_BIN is not configuration: ignored." in warnings[0]
    assert "(did you mean ORACULO_PIPELINE_SHARDS?)" in warnings[1]


def test_the_configuration_file_is_found_as_people_expect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = write(tmp_path, "[pipeline]\nshards = 2\n")
    monkeypatch.chdir(tmp_path)
    assert find_config("other.toml", {"ORACULO_CONFIG": str(named)}) == "other.toml"
    assert find_config(None, {"ORACULO_CONFIG": str(named)}) == str(named)
    assert find_config(None, {}) == "oraculo.toml"
    named.rename(tmp_path / "elsewhere.toml")
    assert find_config(None, {}) is None
    with pytest.raises(ConfigError, match=r"ORACULO_CONFIG=/nope\.toml: no such file"):
        find_config(None, {"ORACULO_CONFIG": "/nope.toml"})


def test_relative_paths_are_the_files_and_overrides_the_callers(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///data/a.db"\n[rules]\nfile = "r.toml"\n')
    settings = load_settings(path, environ={})
    assert settings.database.url == f"sqlite:///{tmp_path / 'data' / 'a.db'}"
    assert settings.rules.file == str(tmp_path / "r.toml")
    assert settings.observe.dump_dir == str(tmp_path / "var" / "dumps")  # a default
    env = {"ORACULO_DATABASE_URL": "sqlite:///b.db"}
    overrides = {"observe": {"dump_dir": "d"}}
    settings = load_settings(path, environ=env, overrides=overrides)
    assert (settings.database.url, settings.observe.dump_dir) == ("sqlite:///b.db", "d")
    assert load_settings(None, environ={}).database.url == "sqlite:///var/oraculo.db"


def test_retention_takes_durations_and_the_token_is_a_secret(tmp_path: Path) -> None:
    env = {"ORACULO_DATABASE_RETENTION": "2d", "ORACULO_HTTP_API_TOKEN": "s3cret-token"}
    settings = load_settings(None, environ=env)
    assert settings.database.retention == 2 * 86400
    assert load_settings(None, environ={}).database.retention == 90 * 86400
    assert "retention = '90d'" in configuration_reference()
    path = write(tmp_path, '[http]\napi_token = "s3cret-token"\n')
    path.chmod(0o644)
    assert exposed_secrets(path) == ["http.api_token"]
