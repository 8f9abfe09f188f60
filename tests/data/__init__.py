"""Test data shipped with the repository."""

from pathlib import Path

BINANCE_DATA = Path(__file__).resolve().parent / "binance"
"""Recorded Binance frames (copied from the team's shared/data/binance, provenance in its
README.md): real data finds what synthetic data hides."""

BINANCE_FUTURES_DATA = Path(__file__).resolve().parent / "binance-futures"
"""Recorded Binance USD-M and COIN-M futures frames and REST depth snapshots (copied from the
team's shared/data/binance-futures; its README.md lists how they differ from spot)."""
