"""Adapters that make a DeploymentHandle look like the stage protocol it serves.

The pipeline awaits ``stage.method(...)`` on whatever it was given; here that becomes
``handle.method.remote(...)``. Ray wraps exceptions raised in a replica: typed ragserve errors
are unwrapped so the ingress maps them like local ones; anything else (a dead replica,
back-pressure) becomes ``StageUnavailableError``.

A handle carries the transport of the process that made it: ``serve.run`` in a script, a test
or a notebook builds the graph in the driver, which keeps Serve's default (Ray actor calls, so
that ``.result()`` works there), while ``serve run``/``serve deploy`` build it inside the
cluster. The client re-applies the transport of the replica it runs in, so the ingress calls
its stages over gRPC in throughput mode however the graph was started (``graphs/serve_env.py``).
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from ray.exceptions import RayTaskError
from ray.serve._private.constants import RAY_SERVE_USE_GRPC_BY_DEFAULT
from ray.serve.handle import DeploymentHandle

from ragserve.errors import RagServeError, StageUnavailableError

__all__ = ["StageClient"]


def _unwrap(exc: BaseException, stage: str) -> BaseException:
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if isinstance(cause, RagServeError):
        return cause
    if isinstance(exc, RagServeError):
        return exc
    return StageUnavailableError(
        f"{stage} failed: {type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}",
        details={"stage": stage},
    )


class StageClient:
    def __init__(self, handle: DeploymentHandle, stage: str) -> None:
        # This process's choice (its environment), not the one pickled with the handle.
        self._handle = handle.options(_by_reference=not RAY_SERVE_USE_GRPC_BY_DEFAULT)
        self._stage = stage

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await getattr(self._handle, method).remote(*args, **kwargs)
            except Exception as exc:
                raise _unwrap(exc, self._stage) from exc

        return call

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            gen = self._handle.options(stream=True).stream.remote(*args, **kwargs)
            async for item in gen:
                yield item
        except Exception as exc:
            raise _unwrap(exc, self._stage) from exc
