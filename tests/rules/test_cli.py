"""``oraculo-trio rules check | rules push`` and ``silence add | list | expire``, in process."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import trio

from oraculo_trio.cli import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, main
from oraculo_trio.core.rules import RULE_KINDS
from oraculo_trio.demo import demo_rules_path
from oraculo_trio.mockexchange import ScriptedMarket
from oraculo_trio.mockexchange.markets.futures import FuturesScriptMarket
from oraculo_trio.store.opening import open_store

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "rules.toml", demo_rules_path()]


def demo_config(tmp_path: Path) -> Path:
    """A configuration following the demo's markets (spot and USD-M), as the demo does."""
    spot = ", ".join(f'"{s}"' for s in ScriptedMarket().symbols)
    usdm = ", ".join(f'"{s}"' for s in FuturesScriptMarket().symbols)
    path = tmp_path / "oraculo.toml"
    path.write_text(
        f'[[feed]]\nmarket = "spot"\nsymbols = [{spot}]\n\n'
        f'[[feed]]\nmarket = "usdm"\nsymbols = [{usdm}]\ndepth_streams = []\n'
        'trade_streams = ["aggTrade"]\nfutures_streams = ["markPrice", "forceOrder"]\n'
    )
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=["rules.toml", "demo_rules.toml"])
def test_shipped_rule_files_cover_every_kind_and_pass_check(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kinds = {entry["kind"] for entry in tomllib.loads(path.read_text())["rule"]}
    assert kinds == set(RULE_KINDS)
    # rules.toml beside the shipped oraculo.toml (spot only: its futures rules are disabled);
    # the demo's rules beside the demo's markets.
    config = ROOT / "oraculo.toml" if path == SHIPPED[0] else demo_config(tmp_path)
    assert main(["rules", "check", str(path), "--strict", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{path}: {len(out) - 1} rules OK"


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ('kind = "crossing"\nparams = { level = "high" }', "rule 'bad': params.level = 'high'"),
        (
            'kind = "zscore"\nparams = { window = "10s" }',
            "rule 'bad': params.threshold is required",
        ),
        ('kind = "crossing"\nparams = { level = 1 }\ntrigger = "always"', "rule 'bad': trigger"),
        ('kind = "nope"', "rule 'bad': kind = 'nope'"),
        ('kind = "no_data"\nparams = { seconds = 1 }\nfor = "a while"', "rule 'bad': for"),
    ],
)
def test_a_bad_rule_fails_naming_the_rule_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, named: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(f'[[rule]]\nid = "ok"\nkind = "crossing"\nparams = {{ level = 1 }}\n\n'
                    f'[[rule]]\nid = "bad"\n{rule}\n')  # fmt: skip
    assert main(["rules", "check", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert named in err
    assert err.splitlines()[-1] == f"{path}: 1 error, 0 warnings"


def test_rules_push_fills_the_rules_table(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert main(["rules", "push", str(SHIPPED[0]), "--database-url", url]) == EXIT_OK
    assert "26 rules stored" in capsys.readouterr().out

    async def read() -> list[dict]:
        async with open_store(url, statement_timeout=5) as store:
            return await store.fetch_rules()

    entries = trio.run(read)
    assert len(entries) == 26 and entries[0]["id"] == "basis-wide"


def test_silence_add_list_query_expire_on_the_store(tmp_path: Path, capsys) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    add = ["silence", "add", "--rule", "whale-trade", "--symbol", "btcusdt", "--for", "1h"]
    assert main([*add, "--comment", "known desk flow", "--created-by", "ana", *db]) == EXIT_OK
    added = capsys.readouterr().out.splitlines()
    assert added[0].split() == ["ID", "STATUS", "STARTS", "ENDS", "CREATED", "BY", "MATCHERS",
                                "COMMENT"]  # fmt: skip
    assert added[1].split()[:2] == ["1", "active"]
    assert 'rule_id="whale-trade" symbol="BTCUSDT"' in added[1]
    assert added[1].endswith("known desk flow")
    critical_sol = ["severity=critical", 'symbol=~"SOL.*"']
    assert main(["silence", "add", *critical_sol, "--for", "30m", "--comment", "x", "-q", *db]) == 0
    assert capsys.readouterr().out == "2\n"
    assert main(["silence", "list", "-o", "json", *db]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [(s["id"], s["status"]) for s in listed] == [(1, "active"), (2, "active")]
    assert listed[1]["matchers"] == [
        {"name": "severity", "op": "=", "value": "critical"},
        {"name": "symbol", "op": "=~", "value": "SOL.*"},
    ]
    assert main(["silence", "query", "symbol=SOLUSDT", "severity=critical", "-q", *db]) == 0
    assert capsys.readouterr().out == "2\n"
    assert main(["silence", "expire", "1", *db]) == EXIT_OK
    assert main(["silence", "expire", "1", *db]) == EXIT_ERROR
    capsys.readouterr()
    assert main(["silence", "list", "-q", *db]) == EXIT_OK
    assert capsys.readouterr().out == "2\n"
    assert main(["silence", "list", "--all", *db]) == EXIT_OK
    assert ["1", "expired"] in [line.split()[:2] for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--for", "1h", "--comment", "c"], "a silence needs at least one matcher"),
        (["--rule", "x", "--for", "soon", "--comment", "c"], "--for = 'soon'"),
        (["--rule", "x", "--for", "0s", "--comment", "c"], "expected a duration > 0"),
        (["--rule", "x", "--for", "-5m", "--comment", "c"], "--for = '-5m'"),
        (["symbol!=X", "--for", "1h", "--comment", "c"], "would mute nearly every alert"),
        (["symbol=~(", "--for", "1h", "--comment", "c"], "bad regular expression"),
    ],
)
def test_silence_add_refuses_nonsense(tmp_path: Path, capsys, args: list, named: str) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    assert main(["silence", "add", *args, *db]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert named in err and "configuration error" not in err
