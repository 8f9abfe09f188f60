"""The built-in kinds by name: what ``kind = "..."`` in a rule file selects."""

from __future__ import annotations

from oraculo_trio.core.rules.depth import BookImbalance, LiquidityWall, SpreadAboveBps, ThinBook
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
from oraculo_trio.core.rules.stats import ZScore
from oraculo_trio.core.rules.timing import NoData
from oraculo_trio.core.rules.trades import BuySellImbalance, LargeTrade, TradeRate, VolumeSpike

RULE_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (
        Crossing,
        CrossingUp,
        CrossingDown,
        GreaterThan,
        LessThan,
        EnteringChannel,
        ExitingChannel,
        InsideChannel,
        OutsideChannel,
        MovingUpPct,
        MovingDownPct,
        LargeTrade,
        VolumeSpike,
        TradeRate,
        BuySellImbalance,
        SpreadAboveBps,
        BookImbalance,
        LiquidityWall,
        ThinBook,
        NoData,
        ZScore,
    )
}
