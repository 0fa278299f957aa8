"""pairs-tui: a terminal cockpit for pairs trading on live Binance trades."""

__version__ = "0.1.0"
