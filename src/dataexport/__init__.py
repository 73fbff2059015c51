"""dataexport: a self-hosted, API-compatible implementation of the Contentsquare Data Export API."""

__version__ = "0.1.0"
