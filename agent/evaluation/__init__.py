"""Evaluation protocols (EVALUATION.md) run through the same code as the live agent."""
