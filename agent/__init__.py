"""Cadence: continuous behavioural authentication on the endpoint."""

__version__ = "0.1.0"
