"""uvicorn's HTTP protocol with a deadline on request headers.

uvicorn times out idle keep-alive connections only: a client that opens a connection and then sends
its request line and headers a byte at a time (slowloris) holds the connection for ever. This
protocol closes a connection whose request headers are not complete ``deadline_s`` seconds after the
connection opened or the request began. The body has its own deadline in the ingest handler.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROTOCOL = "adapter.server:HeaderDeadlineProtocol"
"""What ``serve`` passes as uvicorn's ``http`` (an import string, so worker processes load it too)."""


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose request headers take too long."""

    deadline_s: float = 30.0
    """Set from the ``request_read_timeout`` setting in every worker process."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.deadline_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
