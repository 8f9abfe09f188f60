"""Load-test tooling: a Binance-compatible mock exchange and the market models it serves.

``loadtest.exchange.MockExchange`` is the WebSocket server the demo, the tests and the load
test connect to; ``loadtest.markets`` holds the models that decide what it publishes
(``ScriptedMarket`` for the demo, ``RandomWalkMarket`` for load, ``ReplayMarket`` for recorded
frames). ``python -m oraculo_trio.mockexchange --market demo`` runs a standalone exchange.
"""
