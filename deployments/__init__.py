"""Thin Ray Serve deployments, one module per stage. Logic lives in ``ragserve``."""
