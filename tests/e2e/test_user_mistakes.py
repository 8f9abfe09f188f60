"""A user's mistakes, each run as the user runs it (a subprocess): one line naming the
problem and what to do, the documented exit code, never a traceback."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
import trio

from oraculo_trio.core.book import UPDATES_IN_C
from oraculo_trio.testing.config import rules_document, service_environ, toml_document
from oraculo_trio.testing.net import closed_port
from oraculo_trio.testing.processes import cli_argv
from tests.services import unavailable

GOOD_RULE = {"id": "btc-cross", "kind": "crossing", "symbols": ["BTCUSDT"], "params": {"level": 1}}


@attrs.frozen
class Outcome:
    code: int
    stdout: list[str]
    stderr: list[str]


async def oraculo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Outcome:
    environ = service_environ()
    environ.update(env or {})
    with trio.fail_after(60):
        result = await trio.run_process(
            cli_argv(*args), cwd=cwd, env=environ, capture_stdout=True, capture_stderr=True,
            check=False,
        )  # fmt: skip
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "Traceback" not in out + err, out + err
    return Outcome(result.returncode, out.splitlines(), err.splitlines())


def configuration(folder: Path, sections: dict, rules: list[dict] | str = (GOOD_RULE,)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = rules if isinstance(rules, str) else rules_document(rules)
    (folder / "rules.toml").write_text(text)
    path = folder / "oraculo.toml"
    path.write_text(toml_document({"feed": {"url": "ws://127.0.0.1:9"}, **sections}))
    return path


@contextmanager
def port_in_use() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_port_in_use_is_one_line_for_run_and_demo(tmp_path: Path) -> None:
    with port_in_use() as port:
        config = configuration(tmp_path / "svc", {"http": {"port": port}})
        # --offline: no exchange to check feed.symbols against (see the next test).
        run = await oraculo("run", "--config", str(config), "--offline", cwd=tmp_path)
        demo = await oraculo(
            "demo", "--http-port", str(port), "--duration", "5", cwd=tmp_path,
        )  # fmt: skip
    expected = f"http.port {port} is in use (on 127.0.0.1): stop the other process or pass "
    for outcome in (run, demo):
        assert outcome.code == 2
        assert outcome.stderr[-1].startswith(f"oraculo-trio: configuration error: {expected}")


# Imported first by the child (a sitecustomize on its PYTHONPATH): the install as it is
# where no C compiler built the book's extension.
WITHOUT_THE_C_BOOK = """
import sys

class NoCompiledBook:
    def find_spec(self, name, path=None, target=None):
        if name == "oraculo_trio.core._book_levels":
            raise ImportError("not built")
        return None

sys.meta_path.insert(0, NoCompiledBook())
"""


async def test_an_install_without_a_c_compiler_is_one_warning_line(tmp_path: Path) -> None:
    if not UPDATES_IN_C:
        unavailable("oraculo_trio.core._book_levels was not built (no C compiler at install?)")
    uncompiled = tmp_path / "uncompiled"
    uncompiled.mkdir()
    (uncompiled / "sitecustomize.py").write_text(WITHOUT_THE_C_BOOK)
    environ = service_environ()
    environ["PYTHONPATH"] = os.pathsep.join([str(uncompiled), environ["PYTHONPATH"]])
    with port_in_use() as port:  # start-up goes as far as the HTTP port, then stops
        config = configuration(tmp_path / "svc", {"http": {"port": port}})
        args = ("run", "--config", str(config), "--offline")
        built = await oraculo(*args, cwd=tmp_path)
        unbuilt = await oraculo(*args, cwd=tmp_path, env=environ)
    warning = "order books update in Python: the C extension oraculo_trio.core._book_levels"
    (said,) = [line for line in unbuilt.stderr if "WARNING" in line]
    assert warning in said
    assert said.endswith(
        "reinstall with gcc and the Python headers (pip install -e .) for about a fifth less CPU"
        " on diff books"
    )
    assert not any(warning in line for line in built.stderr), built.stderr
    # and nothing else changes: the same one-line error ends both runs
    assert built.code == unbuilt.code == 2
    assert built.stderr[-1] == unbuilt.stderr[-1]


async def test_an_exchange_out_of_reach_at_start_up_is_one_line(tmp_path: Path) -> None:
    config = configuration(tmp_path, {"http": {"port": 0}})
    outcome = await oraculo("run", "--config", str(config), cwd=tmp_path)
    assert outcome.code == 1
    assert outcome.stderr[-1].startswith(
        "oraculo-trio: error: feed: exchangeInfo of http://127.0.0.1:9/api/v3/exchangeInfo "
        "could not be read ("
    )
    assert outcome.stderr[-1].endswith("start with --offline to skip the check of feed.symbols")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["demo", "--duration", "-3"], "argument --duration: '-3': expected a number of seconds"),
        (["silence", "add", "--rule", "x", "--for", "-5m", "--comment", "c"], "--for = '-5m'"),
        (["alerts", "history", "--limit", "0"], "argument --limit: '0': expected an integer > 0"),
    ],
)
async def test_a_bad_option_is_one_line_and_no_configuration_error(
    tmp_path: Path, args: list[str], named: str
) -> None:
    outcome = await oraculo(*args, "--database-url", f"sqlite:///{tmp_path / 'a.db'}", cwd=tmp_path)
    assert outcome.code == 2
    assert len(outcome.stderr) == 1 and named in outcome.stderr[0], outcome.stderr
    assert "configuration error" not in outcome.stderr[0]


async def test_rules_check_of_a_directory(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    outcome = await oraculo("rules", "check", "bad/", cwd=tmp_path)
    assert outcome.code == 2
    assert outcome.stderr == [
        f"oraculo-trio: configuration error: rule file bad is a directory: give the path of a "
        f"TOML file in it (such as {Path('bad') / 'rules.toml'})"
    ]


RULE_MISTAKES = [
    # (rule file, strict, exit code, what stderr says)
    ('[[rule]]\nid = "a"\nkind = "crossing"\nsymbols = ["btc usdt"]\nparams = { level = 1 }\n',
     False, 2, "error: rule 'a': symbols: 'btc usdt' is not a symbol"),
    ('[[rule]]\nid = "a"\nkind = "crossing"\nsymbols = ["BTCUSDT"]\nparams = { level = 1 }\n'
     'message = "{symbl} crossed {value:.2q}"\n',
     False, 0, "warning: rule 'a': message: '{symbl} crossed {value:.2q}': unknown field {symbl}"),
    ('[[rule]]\nid = "a"\nkind = "crossing"\nsymbols = ["BTCUSDT"]\nparams = { level = 1 }\n'
     'message = "{symbol} crossed {value:.2q}"\n', True, 2, "bad format {value:.2q}"),
    ("", False, 0, "warning: the file holds no rules"),
    ('[[rule]]\nid = "a"\nkind = "crossing"\nsymbols = ["SOLUSDT"]\nparams = { level = 1 }\n',
     False, 0, "warning: rule 'a': symbols: 'SOLUSDT' is not a symbol of feed.symbols"),
    ('[[rule]]\nid = "a"\nkind = "crosing"\nparams = { level = 1 }\n\n[[rule]]\nid = "b"\n'
     'kind = "crossing"\nparams = { level = 1 }\nseverty = "info"\n',
     False, 2, "unknown key 'severty' (did you mean 'severity'?)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "strict", "code", "named"), RULE_MISTAKES)
async def test_rules_check_reports_every_mistake(
    tmp_path: Path, text: str, strict: bool, code: int, named: str
) -> None:
    configuration(tmp_path, {"feed": {"url": "ws://127.0.0.1:9", "symbols": ["BTCUSDT"]}}, text)
    outcome = await oraculo("rules", "check", *(["--strict"] if strict else []), cwd=tmp_path)
    assert outcome.code == code, outcome
    assert any(named in line for line in outcome.stderr), outcome.stderr
    if code == 0:
        assert re.search(r"rules OK, \d warnings?$", outcome.stdout[-1]), outcome.stdout


async def test_configuration_is_found_as_people_expect(tmp_path: Path) -> None:
    with closed_port() as port:
        config = configuration(tmp_path / "etc", {"http": {"port": port}})
        # ORACULO_CONFIG is read (health finds the port there), from any folder.
        found = await oraculo("health", cwd=tmp_path, env={"ORACULO_CONFIG": str(config)})
    assert found.code == 1
    assert found.stdout == [
        f"UNHEALTHY: cannot reach http://127.0.0.1:{port}: [Errno 111] Connection refused"
    ]
    missing = await oraculo("rules", "check", cwd=tmp_path, env={"ORACULO_CONFIG": "nope.toml"})
    assert missing.code == 2
    assert missing.stderr == [
        "oraculo-trio: configuration error: ORACULO_CONFIG=nope.toml: no such file: point it "
        "at an oraculo.toml, or unset it"
    ]
    # A wrapper script's own variable draws a warning; a typo in a real section an error.
    wrapper = await oraculo(
        "rules", "check", "--config", str(config), cwd=tmp_path, env={"ORACULO_BIN": "/x"}
    )
    assert wrapper.code == 0
    assert wrapper.stderr[0].startswith(
        "oraculo-trio: warning: environment variable ORACULO_BIN is not configuration: ignored."
    )
    typo = await oraculo(
        "rules", "check", "--config", str(config), cwd=tmp_path, env={"ORACULO_HTTP_PROT": "1"}
    )
    assert typo.code == 2
    assert (
        "ORACULO_HTTP_PROT names unknown key http.prot (did you mean ORACULO_HTTP_PORT?)"
        in (typo.stderr[-1])
    )


async def test_migrate_resolves_paths_from_the_configuration_and_says_what_it_did(
    tmp_path: Path,
) -> None:
    config = configuration(tmp_path / "etc", {"database": {"url": "sqlite:///var/alerts.db"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = await oraculo("migrate", "--config", str(config), cwd=elsewhere)
    assert refused.code == 2
    assert refused.stderr == [
        f"oraculo-trio: configuration error: database.url: the folder {tmp_path / 'etc' / 'var'} "
        "does not exist: create it, fix the path, or pass --create-dirs"
    ]
    created = await oraculo("migrate", "--config", str(config), "--create-dirs", cwd=elsewhere)
    again = await oraculo("migrate", "--config", str(config), cwd=elsewhere)
    database = tmp_path / "etc" / "var" / "alerts.db"
    assert (created.code, again.code) == (0, 0)
    assert created.stdout == [f"sqlite:///{database}: applied 1, 2, 3 (now at version 3)"]
    assert again.stdout == [f"sqlite:///{database}: already at version 3"]
    assert database.exists() and not (elsewhere / "var").exists()


async def test_a_silence_that_matches_no_rule_draws_a_warning(tmp_path: Path) -> None:
    config = configuration(tmp_path, {"feed": {"url": "ws://127.0.0.1:9", "symbols": ["BTCUSDT"]}})
    db = f"sqlite:///{tmp_path / 'a.db'}"
    args = ["silence", "add", "--rule", "btc-cros", "--for", "1h", "--comment", "c", "-q"]
    outcome = await oraculo(*args, "--config", str(config), "--database-url", db, cwd=tmp_path)
    assert outcome.code == 0 and outcome.stdout == ["1"]
    assert outcome.stderr == [
        'oraculo-trio: warning: silence {rule_id="btc-cros"} matches no alert of the 1 rules in '
        "force on feed.symbols (did you mean 'btc-cross'?): it mutes nothing"
    ]


async def test_commands_without_a_service_say_so_in_one_line(tmp_path: Path) -> None:
    with closed_port() as port:
        health = await oraculo("health", "--url", f"127.0.0.1:{port}", cwd=tmp_path)
        listing = await oraculo("alerts", "list", "--url", f"127.0.0.1:{port}", cwd=tmp_path)
    assert health.code == 1
    assert health.stdout == [
        f"UNHEALTHY: cannot reach http://127.0.0.1:{port}: [Errno 111] Connection refused"
    ]
    assert listing.code == 1 and len(listing.stderr) == 1
    assert listing.stderr[0].startswith(
        f"oraculo-trio: error: cannot reach the service at http://127.0.0.1:{port} (ConnectError"
    )
    assert listing.stderr[0].endswith(
        "is it running? Give its address with --url, or read the store directly with --database-url"
    )
