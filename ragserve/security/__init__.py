"""Security of the service: API keys and scopes, tenants and document access, per-key limits,
the audit log of retrievals, PII filtering and untrusted-content handling.

Import the modules themselves (``ragserve.security.auth`` ...): this package imports nothing, so
``ragserve.config`` can use ``ragserve.security.config`` without an import cycle.
"""
