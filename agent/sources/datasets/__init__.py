"""Loaders for public behavioural-biometrics datasets in their original formats."""
