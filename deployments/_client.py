"""Adapters that make a DeploymentHandle look like the stage protocol it serves.

The pipeline awaits ``stage.method(...)`` on whatever it was given; here that becomes
``handle.method.remote(...)``. Ray wraps exceptions raised in a replica: typed ragserve errors
are unwrapped so the ingress maps them like local ones; anything else (a dead replica,
back-pressure) becomes ``StageUnavailableError``.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from ray.exceptions import RayTaskError
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
        self._handle = handle
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
