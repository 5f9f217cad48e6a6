"""Builders that compose the stage deployments into Serve applications."""
