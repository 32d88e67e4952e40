"""Per-user models: numpy scoring for the resident agent, pyod detectors for training."""
