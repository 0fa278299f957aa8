"""The terminal cockpit (Textual). Only this package imports Textual or plotext."""
