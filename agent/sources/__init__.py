"""Sources turn raw input (live hooks, recordings, public datasets) into Event streams."""
