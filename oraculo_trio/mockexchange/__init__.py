"""A Binance-compatible mock exchange (WebSocket streams and REST) and its market models.

The test double that ships with the product: the demo, the pytest plugin and the load tool run
the service against it on 127.0.0.1.
"""
