"""The built-in kinds by name: what ``kind = "..."`` in a rule file selects."""

from __future__ import annotations

from oraculo_trio.core.rules.depth import KINDS as DEPTH_KINDS
from oraculo_trio.core.rules.futures import KINDS as FUTURES_KINDS
from oraculo_trio.core.rules.price import KINDS as PRICE_KINDS
from oraculo_trio.core.rules.stats import KINDS as STATS_KINDS
from oraculo_trio.core.rules.timing import KINDS as TIMING_KINDS
from oraculo_trio.core.rules.trades import KINDS as TRADE_KINDS

RULE_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (
        *PRICE_KINDS,
        *TRADE_KINDS,
        *DEPTH_KINDS,
        *TIMING_KINDS,
        *STATS_KINDS,
        *FUTURES_KINDS,
    )
}
