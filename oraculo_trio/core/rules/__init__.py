"""Rules: what the rule file declares, and the kinds that evaluate events.

A rule kind is a class with a ``kind`` name, the ``streams`` it looks at, and
``evaluate(event, state, now) -> Signal | None`` (the :class:`Rule` protocol). ``state`` is
the rule's :class:`RuleState` for one symbol: the symbol's shared :class:`MarketState` and
the rule's own scratch data. ``None`` means "this event tells me nothing"; a
:class:`Signal` says whether the condition holds and with what value.

Kinds and their boundaries (``>=`` means the value equal to the threshold fires):

=====================  =======  =============================================================
kind                   stream   holds while / fires when
=====================  =======  =============================================================
crossing               trade    a trade crosses ``level`` either way (an event)
crossing_up / _down    trade    ... upward (prev < level <= price) / downward (prev > level >=
                                price)
greater_than           trade    last price > ``level`` (``hysteresis``: stays until <= level-h)
less_than              trade    last price < ``level`` (``hysteresis``: stays until >= level+h)
entering_channel       trade    a trade moves from outside ``[low, high]`` to inside (an event)
exiting_channel        trade    a trade moves from inside ``[low, high]`` to outside (an event)
inside_channel         trade    low <= last price <= high
outside_channel        trade    last price < low or > high
moving_up_pct          trade    price >= ``pct`` % above the lowest price of the last ``window`` s
moving_down_pct        trade    price >= ``pct`` % below the highest price of the last ``window``
large_trade            trade    one trade's notional >= ``notional`` (an event)
volume_spike           trade    volume rate of the last ``window`` s >= ``factor`` x the rate of
                                the ``baseline`` s before it
trade_rate             trade    trades per second over ``window`` > ``rate``
buy_sell_imbalance     trade    (buy - sell) / (buy + sell) quantity over ``window`` >=
                                ``threshold`` (``side``)
spread_above_bps       depth    spread > ``bps`` (``hysteresis`` in bps)
book_imbalance         depth    top-``levels`` bid qty / ask qty >= ``ratio`` (or <= 1/ratio)
liquidity_wall         depth    one level within ``bps`` of mid has notional >= ``notional``
thin_book              depth    notional within ``bps`` of mid < ``notional``
no_data                both     no message for >= ``seconds``
zscore                 trade    abs(z-score of the price over ``window``) >= ``threshold``
funding_rate_above     mark     a perpetual's funding rate > ``level`` (``_below``: < level)
basis_bps              mark     abs((mark - index) / index) >= ``bps`` (``side``)
liquidation_notional   liq.     notional liquidated over ``window`` >= ``notional`` (``side``)
=====================  =======  =============================================================

Event kinds read false again as soon as the moment has passed (the next trade or tick), so
with ``keep_firing_for = 0`` they resolve right after firing.

Everything here is pure: no trio, no I/O, ``now`` is passed in. One module per family:

- :mod:`~oraculo_trio.core.rules.base`: the :class:`Rule` protocol, :class:`RuleBase`, and what a
  kind reads and returns (:class:`MarketState`, :class:`RuleState`, :class:`Signal`);
- :mod:`~oraculo_trio.core.rules.params`: parameter checks and durations;
- :mod:`~oraculo_trio.core.rules.price`, :mod:`~oraculo_trio.core.rules.trades`,
  :mod:`~oraculo_trio.core.rules.depth`, :mod:`~oraculo_trio.core.rules.timing`,
  :mod:`~oraculo_trio.core.rules.stats`, :mod:`~oraculo_trio.core.rules.futures`: the
  kinds, by what they read;
- :mod:`~oraculo_trio.core.rules.registry`: :data:`RULE_KINDS`, the built-in kinds by name;
- :mod:`~oraculo_trio.core.rules.parsing`: the rule file (:class:`RuleSpec`,
  :func:`parse_rules`, :func:`collect_rules`, :func:`rules_for`);
- :mod:`~oraculo_trio.core.rules.messages`: message templates, their checks and each kind's
  default messages.

Import from this package: the module layout is not part of the API.
"""

from __future__ import annotations

from oraculo_trio.core.rules.base import (
    MarketState,
    Rule,
    RuleBase,
    RuleState,
    Signal,
)
from oraculo_trio.core.rules.checks import rule_warnings
from oraculo_trio.core.rules.depth import (
    SIDES_BOOK,
    BookImbalance,
    LiquidityWall,
    SpreadAboveBps,
    ThinBook,
)
from oraculo_trio.core.rules.futures import (
    BASIS_SIDES,
    LIQUIDATION_SIDES,
    BasisBps,
    FundingRateAbove,
    FundingRateBelow,
    LiquidationNotional,
)
from oraculo_trio.core.rules.messages import (
    FIELDS,
    default_messages,
    did_you_mean,
    template_problems,
)
from oraculo_trio.core.rules.params import parse_duration
from oraculo_trio.core.rules.parsing import (
    OFFLOADS,
    RULE_KEYS,
    SEVERITIES,
    TRIGGERS,
    CompiledRule,
    RuleSpec,
    collect_rules,
    parse_rule,
    parse_rules,
    rules_for,
)
from oraculo_trio.core.rules.price import (
    Crossing,
    CrossingDown,
    CrossingUp,
    EnteringChannel,
    ExitingChannel,
    GreaterThan,
    InsideChannel,
    LessThan,
    MovingDownPct,
    MovingUpPct,
    OutsideChannel,
)
from oraculo_trio.core.rules.registry import RULE_KINDS
from oraculo_trio.core.rules.stats import ZScore
from oraculo_trio.core.rules.timing import NoData
from oraculo_trio.core.rules.trades import (
    SIDES_ANY,
    BuySellImbalance,
    LargeTrade,
    TradeRate,
    VolumeSpike,
)

__all__ = [
    "BASIS_SIDES",
    "FIELDS",
    "LIQUIDATION_SIDES",
    "OFFLOADS",
    "RULE_KEYS",
    "RULE_KINDS",
    "SEVERITIES",
    "SIDES_ANY",
    "SIDES_BOOK",
    "TRIGGERS",
    "BasisBps",
    "BookImbalance",
    "BuySellImbalance",
    "CompiledRule",
    "Crossing",
    "CrossingDown",
    "CrossingUp",
    "EnteringChannel",
    "ExitingChannel",
    "FundingRateAbove",
    "FundingRateBelow",
    "GreaterThan",
    "InsideChannel",
    "LargeTrade",
    "LessThan",
    "LiquidationNotional",
    "LiquidityWall",
    "MarketState",
    "MovingDownPct",
    "MovingUpPct",
    "NoData",
    "OutsideChannel",
    "Rule",
    "RuleBase",
    "RuleSpec",
    "RuleState",
    "Signal",
    "SpreadAboveBps",
    "ThinBook",
    "TradeRate",
    "VolumeSpike",
    "ZScore",
    "collect_rules",
    "default_messages",
    "did_you_mean",
    "parse_duration",
    "parse_rule",
    "parse_rules",
    "rule_warnings",
    "rules_for",
    "template_problems",
]
