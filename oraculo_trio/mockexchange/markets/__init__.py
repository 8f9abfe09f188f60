"""Market models: what the mock exchange publishes.

- ``payloads``: the ``Market`` protocol, Binance's payload shapes, exact prices and rates;
- ``scripted``: ``ScriptedMarket``, a looping timeline of ``Phase`` rows over ``Instrument``
  baselines (``demo_script()`` is the demo's 20 s cycle);
- ``walk``: ``RandomWalkMarket``, random walks at an exact total rate;
- ``load``: ``LoadMarket`` and ``MarketSource``, frame sources for open-loop load;
- ``replay``: ``ReplayMarket`` (recorded frames, looping) and ``RecordedBooks`` (recorded diff
  sessions and their snapshots, once);
- ``diffbook``: ``DiffBookMarket``, true books with their diff streams, snapshots and faults.

Their public names are re-exported by ``oraculo_trio.mockexchange``.
"""
