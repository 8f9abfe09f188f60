"""What is legal in a rule file but probably a mistake: the warnings of ``rules check``.

Errors stop a rule file from loading (:func:`~oraculo_trio.core.rules.collect_rules`);
these only draw a warning (``rules check --strict`` makes them errors): no rules at all,
enabled rules on symbols no feed subscribes to (``feed.symbols``, by market: ``usdm:BTCUSDT``),
and message templates that name unknown fields or use bad formats. A disabled rule
(``enabled = false``) never sees a symbol anyway: its symbols are not checked.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from oraculo_trio.core.rules.messages import did_you_mean, template_problems
from oraculo_trio.core.rules.parsing import CompiledRule


def rule_warnings(rules: Sequence[CompiledRule], subscribed: Sequence[str] | None) -> list[str]:
    """One message per probable mistake in ``rules``.

    Args:
        rules: the valid rules of a file.
        subscribed: the symbols the feeds subscribe to, by their service names
            (``Settings.symbols``); None skips the symbol checks.
    """
    if not rules:
        return ["the file holds no rules: nothing will ever fire"]
    warnings: list[str] = []
    for compiled in rules:
        spec = compiled.spec
        for key, template in (
            ("message", spec.message),
            ("message_resolved", spec.message_resolved),
        ):
            for problem in template_problems(template):
                warnings.append(f"rule {spec.id!r}: {key}: {problem}")
        if subscribed is None or not spec.enabled:
            continue
        for pattern in spec.symbols:
            if any(fnmatch.fnmatchcase(symbol, pattern) for symbol in subscribed):
                continue
            what = "matches no symbol" if _is_glob(pattern) else "is not a symbol"
            warnings.append(
                f"rule {spec.id!r}: symbols: {pattern!r} {what} of feed.symbols "
                f"({', '.join(subscribed)}){did_you_mean(pattern, subscribed)}: the service "
                "does not subscribe to it, so the rule never sees it"
            )
    return warnings


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
