"""``oraculo-trio rules check | rules push`` and ``silence add | list | expire``, in process."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import trio

from oraculo_trio.cli import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, main
from oraculo_trio.core.rules import RULE_KINDS
from oraculo_trio.demo import demo_rules_path
from oraculo_trio.store.opening import open_store

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "rules.toml", demo_rules_path()]


@pytest.mark.parametrize("path", SHIPPED, ids=["rules.toml", "demo_rules.toml"])
def test_shipped_rule_files_cover_every_kind_and_pass_check(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kinds = {entry["kind"] for entry in tomllib.loads(path.read_text())["rule"]}
    assert kinds == set(RULE_KINDS)
    assert main(["rules", "check", str(path)]) == EXIT_OK
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
    assert named in capsys.readouterr().err


def test_rules_push_fills_the_rules_table(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert main(["rules", "push", str(SHIPPED[0]), "--database-url", url]) == EXIT_OK
    assert "26 rules stored" in capsys.readouterr().out

    async def read() -> list[dict]:
        async with open_store(url, statement_timeout=5) as store:
            return await store.fetch_rules()

    entries = trio.run(read)
    assert len(entries) == 26 and entries[0]["id"] == "basis-wide"


def test_silence_add_list_expire(tmp_path: Path, capsys) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    add = ["silence", "add", "--rule", "whale-trade", "--symbol", "btcusdt", "--for", "1h"]
    assert main([*add, "--comment", "known desk flow", "--created-by", "ana", *db]) == EXIT_OK
    added = capsys.readouterr().out
    assert added.startswith("1\tactive\trule=whale-trade\tsymbol=BTCUSDT\t")
    assert added.rstrip().endswith("by=ana\tknown desk flow")
    assert main(["silence", "add", "--symbol", "ETHUSDT", "--for", "30m", *db]) == EXIT_OK
    capsys.readouterr()
    assert main(["silence", "list", *db]) == EXIT_OK
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:4] for line in listed] == [
        ["1", "active", "rule=whale-trade", "symbol=BTCUSDT"],
        ["2", "active", "rule=*", "symbol=ETHUSDT"],
    ]
    assert main(["silence", "expire", "1", *db]) == EXIT_OK
    assert main(["silence", "expire", "1", *db]) == EXIT_ERROR
    capsys.readouterr()
    assert main(["silence", "list", *db]) == EXIT_OK
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["2"]
    assert main(["silence", "list", "--all", *db]) == EXIT_OK
    assert "1\tended\t" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--for", "1h"], "give --rule and/or --symbol"),
        (["--rule", "x", "--for", "soon"], "--for 'soon'"),
        (["--rule", "x", "--for", "0s"], "expected a duration > 0"),
    ],
)
def test_silence_add_refuses_nonsense(tmp_path: Path, capsys, args: list, named: str) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path / 'a.db'}"]
    assert main(["silence", "add", *args, *db]) == EXIT_CONFIG
    assert named in capsys.readouterr().err
