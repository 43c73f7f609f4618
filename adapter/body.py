"""Reading a request body under a size cap, before and during decompression."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from adapter.errors import ApiError

ENCODINGS = ("identity", "gzip", "deflate")
"""Content-Encoding values accepted on /v1/traces."""


async def read_body(
    stream: AsyncIterator[bytes], content_length: str | None, encoding: str | None, limit: int
) -> bytes:
    """The (decompressed) body, refusing with 413 as soon as it would pass ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before anything is read. For gzip and deflate the
    limit applies to the decompressed size and is checked while decompressing, so a small bomb cannot
    expand in memory.
    """
    if content_length is not None:
        try:
            announced = int(content_length)
        except ValueError:
            raise ApiError(400, {"input": "Content-Length must be a number"}) from None
        if announced > limit:
            raise ApiError(413, {"input": f"body must not exceed {limit} bytes"})
    encoding = (encoding or "identity").strip().lower()
    if encoding not in ENCODINGS:
        raise ApiError(415, {"Content-Encoding": "must be one of: " + ", ".join(ENCODINGS)})
    if encoding == "identity":
        return await _read_plain(stream, limit)
    return await _read_compressed(stream, encoding, limit)


def _too_large(limit: int, what: str = "body") -> ApiError:
    return ApiError(413, {"input": f"{what} must not exceed {limit} bytes"})


async def _read_plain(stream: AsyncIterator[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def _read_compressed(stream: AsyncIterator[bytes], encoding: str, limit: int) -> bytes:
    """Decompress as the bytes arrive; several gzip members in a row are read one after another."""
    wbits = 31 if encoding == "gzip" else 15
    decoder = zlib.decompressobj(wbits=wbits)
    parts: list[bytes] = []
    size = raw_size = 0
    async for chunk in stream:
        raw_size += len(chunk)
        if raw_size > limit:
            raise _too_large(limit)
        while chunk:
            try:
                out = decoder.decompress(chunk, limit + 1 - size)
            except zlib.error:
                raise ApiError(400, {"input": f"is not valid {encoding} data"}) from None
            size += len(out)
            if size > limit or decoder.unconsumed_tail:
                raise _too_large(limit, "decompressed body")
            parts.append(out)
            chunk = decoder.unused_data if decoder.eof else b""
            if decoder.eof and chunk:
                decoder = zlib.decompressobj(wbits=wbits)
    if not decoder.eof:
        raise ApiError(400, {"input": f"is not valid {encoding} data (truncated)"})
    return b"".join(parts)
