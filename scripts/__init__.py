"""Launchers and generators run from the repository root (``python -m scripts.<name>``)."""
