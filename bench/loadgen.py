"""A cheap HTTP/1.1 load generator: raw asyncio protocol connections with keep-alive.

* ``closed_loop``: ``connections`` clients, each sending its next request as soon as the previous
  answer arrived (saturation; latency from send to the end of the answer).
* ``fixed_rate``: requests *scheduled* at a constant rate, handed to ``connections`` keep-alive
  connections; latency is measured from the scheduled time, so a server that falls behind is
  charged for the queueing (no coordinated omission). Requests that would wait behind more than
  ``max_pending`` others are not sent and are counted as ``dropped``.

Bodies come from a ``next_body()`` callable returning ``(body, spans)`` (``Workload.next``: a join
of pre-split segments, a few µs per run), so each request carries fresh ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self._head_end = -1
        self._status = 0
        self._length = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self._head_end < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head_end = end + 4
            head = bytes(self.buffer[:end]).lower()
            self._status = int(head[9:12])
            start = head.find(b"content-length:")
            if start < 0:
                self._length = 0
            else:
                stop = head.find(b"\r\n", start)
                self._length = int(head[start + 15 : stop if stop >= 0 else len(head)])
        if len(self.buffer) >= self._head_end + self._length:
            del self.buffer[: self._head_end + self._length]
            self._head_end = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self._status)

    async def request(self, head: bytes, body: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head)
        self.transport.write(body)
        return await self.waiter


@dataclass
class Result:
    """What one load phase measured."""

    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)  # of 200 answers
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    dropped: int = 0
    sent: int = 0
    runs_accepted: int = 0
    spans_accepted: int = 0
    client_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def percentile(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]


class LoadGenerator:
    """Sends ``POST /v1/traces`` with bodies from ``next_body`` to ``127.0.0.1:port``."""

    def __init__(
        self,
        port: int,
        next_body: Callable[[], tuple[bytes, int]],
        runs_per_body: int,
        access_key: str,
        path: str = "/v1/traces",
    ) -> None:
        self.port = port
        self.next_body = next_body
        self.runs_per_body = runs_per_body
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {access_key}\r\n"
            "Content-Type: application/json\r\nUser-Agent: dynamiq-otel-bench\r\nContent-Length: "
        ).encode()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, "127.0.0.1", self.port)
        return protocol

    async def _send(self, conn: _Connection, result: Result) -> tuple[_Connection, int]:
        body, spans = self.next_body()
        result.sent += 1
        try:
            if conn.closed:
                conn = await self._connect()
            status = await conn.request(self._head + str(len(body)).encode() + b"\r\n\r\n", body)
        except (ConnectionError, OSError):
            result.errors += 1
            with contextlib.suppress(OSError):
                conn = await self._connect()
            return conn, 0
        result.statuses[status] += 1
        if status == 200:
            result.runs_accepted += self.runs_per_body
            result.spans_accepted += spans
        return conn, status

    async def closed_loop(self, connections: int, seconds: float) -> Result:
        """Every connection sends its next request as soon as the answer to the previous one came."""
        result = Result()
        conns = [await self._connect() for _ in range(connections)]
        cpu0, started = time.process_time(), time.monotonic()
        deadline = started + seconds

        async def client(conn: _Connection) -> None:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                conn, status = await self._send(conn, result)
                if status == 200:
                    result.latencies_s.append(time.monotonic() - sent)
                elif status == 0:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(client(conn) for conn in conns))
        return _finished(result, conns, started, cpu0)

    async def fixed_rate(self, rate: float, seconds: float, connections: int, max_pending: int = 1000) -> Result:
        """Requests scheduled every ``1/rate`` s; latency counted from the scheduled time."""
        result = Result()
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        conns = [await self._connect() for _ in range(connections)]
        cpu0, started = time.process_time(), time.monotonic()

        async def client(conn: _Connection) -> None:
            while True:
                scheduled = await queue.get()
                if scheduled is None:
                    break
                conn, status = await self._send(conn, result)
                if status == 200:
                    result.latencies_s.append(time.monotonic() - scheduled)

        workers = [asyncio.create_task(client(conn)) for conn in conns]
        total = int(rate * seconds)
        for index in range(total):
            scheduled = started + index / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if queue.qsize() >= max_pending:
                result.dropped += 1
                continue
            queue.put_nowait(scheduled)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return _finished(result, conns, started, cpu0)


def _finished(result: Result, conns: list[_Connection], started: float, cpu0: float) -> Result:
    """Close the phase's connections and stamp its wall and client CPU time."""
    result.duration_s = time.monotonic() - started
    result.client_cpu_s = time.process_time() - cpu0
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return result


def run(coroutine_factory: Callable[[], object]) -> Result:
    """Run one load phase on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine_factory())  # type: ignore[arg-type]
