"""Feature extraction: pure functions from Event windows to numbers."""
