"""The edge: every way into the service (HTTP routes, Serve handles) passes here — request
ids, body limits, one guard (where authentication and rate limits plug in), and the one
mapping of errors to HTTP."""

from ragserve.edge.app import create_app
from ragserve.edge.context import Operation, RequestContext
from ragserve.edge.errors import error_response
from ragserve.edge.guard import Check, Guard
from ragserve.edge.handles import HandleAPI

__all__ = ["create_app", "error_response", "Guard", "Check", "HandleAPI", "Operation",
           "RequestContext"]
