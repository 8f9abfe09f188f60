"""The load's shape, declared once, and the frame source that makes it.

:class:`LoadShape` is what a load test, a saturation-search step, a calibration and the
generator process all describe: what is sent (``stream``), how fast and for how long, over
how many symbols. :class:`GeneratorSpec` is the generator process's whole input: a shape plus
how its mock exchange queues frames; it crosses the process boundary as JSON.

Frame sources plug in through :data:`SOURCES` (``register_source``): anything with
``symbols``, ``depth_kinds``, ``trade_kinds`` and ``frames(count, now_ms)``
(:class:`~oraculo_trio.mockexchange.markets.load.FrameSource`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs

from oraculo_trio.loadtest.schedule import Schedule
from oraculo_trio.mockexchange.markets.diffbook import DiffBookMarket, FaultPlan
from oraculo_trio.mockexchange.markets.load import FrameSource, LoadMarket
from oraculo_trio.mockexchange.markets.payloads import synthetic_symbols


@attrs.frozen
class LoadShape:
    """What a load test sends, and when.

    Attributes:
        stream: a key of :data:`SOURCES` (``depth``, ``trade``, ``mixed``, ``depthdiff``...).
        rate: messages per second at full rate.
        duration: measured seconds.
        warmup: seconds at full rate before measuring.
        ramp: seconds of linear rise from 0 before the warm-up.
        symbols: how many synthetic symbols.
        distribution: ``uniform`` or ``zipf:S``.
        tick: seconds between bursts (Binance pushes ``@100ms`` streams in 100 ms ticks).
        batch: messages per burst at full rate instead; the tick becomes ``batch / rate``.
        levels: partial book depth (5, 10 or 20).
        trade_ratio: share of trades for ``mixed``.
        seed: seed of the market.
        faithful: no ``E`` on partial books, as Binance spot sends them.
        alert_period: seconds between frames that make the load rules alert (0: none).
        faults: faults the source injects, ``gaps,dups,429``... (``depthdiff``; see
            ``oraculo_trio.mockexchange.markets.diffbook.FAULT_KINDS``).
    """

    stream: str = "depth"
    rate: float = 1500.0
    duration: float = 60.0
    warmup: float = 5.0
    ramp: float = 0.0
    symbols: int = 50
    distribution: str = "uniform"
    tick: float = 0.1
    batch: int | None = None
    levels: int = 20
    trade_ratio: float = 0.2
    seed: int = 0
    faithful: bool = False
    alert_period: float = 0.5
    faults: str = ""

    @property
    def burst_period(self) -> float:
        """Seconds between bursts."""
        return self.batch / self.rate if self.batch else self.tick

    def schedule(self) -> Schedule:
        """The schedule this shape describes.

        Raises:
            ValueError: a rate, duration or period out of range.
        """
        return Schedule(
            rate=self.rate,
            duration=self.duration,
            warmup=self.warmup,
            ramp=self.ramp,
            tick=self.burst_period,
        )


@attrs.frozen
class GeneratorSpec:
    """Everything the generator process needs; JSON round-trips through ``attrs.asdict``.

    Attributes:
        shape: the load.
        queue_size: the exchange's frames per connection queue.
        overflow: the exchange's full-queue policy (``block`` keeps every frame).
        host: interface the exchange binds.
    """

    shape: LoadShape = attrs.field(factory=LoadShape)
    queue_size: int = 16384
    overflow: str = "block"
    host: str = "127.0.0.1"

    def to_json(self) -> str:
        """The spec as one line of JSON (the generator's ``--spec``)."""
        return json.dumps(attrs.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GeneratorSpec:
        """The spec of :meth:`to_json`'s output."""
        fields = json.loads(text)
        return cls(shape=LoadShape(**fields.pop("shape", {})), **fields)


def _load_market(shape: LoadShape, trade_ratio: float) -> LoadMarket:
    return LoadMarket(
        synthetic_symbols(shape.symbols),
        trade_ratio=trade_ratio,
        levels=shape.levels,
        distribution=shape.distribution,
        seed=shape.seed,
        faithful=shape.faithful,
        alert_period=shape.alert_period or None,
        rate_per_s=shape.rate,
    )


def _diff_books(shape: LoadShape) -> DiffBookMarket:
    # Diff streams from true books, with their REST snapshots and faults.
    return DiffBookMarket(
        synthetic_symbols(shape.symbols),
        rate_per_s=shape.rate,
        faults=FaultPlan.parse(shape.faults) if shape.faults else None,
        seed=shape.seed,
    )


SourceFactory = Callable[[LoadShape], FrameSource]

SOURCES: dict[str, SourceFactory] = {
    "depth": lambda shape: _load_market(shape, 0.0),
    "trade": lambda shape: _load_market(shape, 1.0),
    "mixed": lambda shape: _load_market(shape, shape.trade_ratio),
    "depthdiff": _diff_books,
}
"""STREAM name -> factory of its frame source; the CLI offers every key."""


def register_source(name: str, factory: SourceFactory) -> None:
    """Offer another STREAM to ``oraculo-trio loadtest``.

    Args:
        name: the STREAM argument.
        factory: builds the source from the shape (``shape.rate``, ``shape.symbols``...).
    """
    SOURCES[name] = factory


def build_source(shape: LoadShape) -> FrameSource:
    """The frame source of ``shape.stream``.

    Raises:
        ValueError: an unknown stream, or a market parameter out of range (an unknown fault
            names the allowed ones).
    """
    factory = SOURCES.get(shape.stream)
    if factory is None:
        raise ValueError(f"stream {shape.stream!r}: expected one of {', '.join(sorted(SOURCES))}")
    return factory(shape)
