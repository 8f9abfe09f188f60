"""oraculo-trio: a market-data alerting service built on Trio's structured concurrency."""

__version__ = "0.1.0"
