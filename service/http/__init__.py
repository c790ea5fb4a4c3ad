"""HTTP on :8000 (--http-port): KServe v2 REST (service.http.kserve) and the task API for curl
(service.http.task), served by uvicorn + Starlette in the server's own event loop, over the same
data plane, admission and metrics as gRPC.

uvicorn runs as a task of the loop the gRPC server uses, on a socket bound here (so port 0 gives
a free port we can report); the convserve server keeps SIGTERM to itself and, when it drains,
closes admission first (new requests answer 503), then stops uvicorn, which lets requests in
flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.calls import Admission, CallMetrics
from service.dataplane import DataPlane
from service.errors import ConvserveError
from service.http import kserve, task
from service.http.routes import HttpContext, json_response

logger = logging.getLogger(__name__)


def build_app(
    plane: DataPlane, calls: CallMetrics | None, admission: Admission | None, max_body_bytes: int
) -> Starlette:
    app = Starlette(
        routes=[*kserve.ROUTES, *task.ROUTES],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.ctx = HttpContext(plane, calls, admission, max_body_bytes)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods, as JSON like every other error."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return json_response({"error": f"{detail}: {request.method} {request.url.path}"}, status)


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM/SIGINT belong to the convserve server (service.server), not to uvicorn


class HttpServer:
    """uvicorn serving one Starlette app on one socket, inside the running event loop."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.port = -1
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and serve; the bound port. ConvserveError when the address cannot be bound."""
        try:
            family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
            sock = socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
            # Re-wrapped so that its proto reads IPPROTO_TCP: asyncio sets TCP_NODELAY only on
            # accepted sockets that say so, and without it every reply on a keep-alive
            # connection waited ~40 ms (Nagle's algorithm against the client's delayed ACK).
            sock = socket.socket(fileno=sock.detach())
            self._socket = sock
        except OSError as exc:
            raise ConvserveError(f"cannot bind HTTP to {host}:{port}: {exc}") from None
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=None,
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise ConvserveError(f"HTTP server on {host}:{port} stopped while starting")
            await asyncio.sleep(0.01)
        self.port = int(sock.getsockname()[1])
        logger.info(
            "HTTP on %s:%d (KServe v2 REST, /v1/classify, /v1/detect-speech)", host, self.port
        )
        return self.port

    async def stop(self, timeout: float) -> None:
        """Stop accepting; let requests in flight finish for up to `timeout` seconds."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        finally:
            if self._socket is not None:  # uvicorn closes it on a clean stop, not when cut short
                self._socket.close()
