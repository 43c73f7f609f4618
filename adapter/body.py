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
    decoder = None if encoding == "identity" else zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    parts: list[bytes] = []
    size = 0
    raw_size = 0
    async for chunk in stream:
        raw_size += len(chunk)
        if raw_size > limit:
            raise ApiError(413, {"input": f"body must not exceed {limit} bytes"})
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, limit + 1 - size)
            except zlib.error:
                raise ApiError(400, {"input": f"is not valid {encoding} data"}) from None
            if decoder.unconsumed_tail:
                raise ApiError(413, {"input": f"decompressed body must not exceed {limit} bytes"})
        size += len(chunk)
        if size > limit:
            raise ApiError(413, {"input": f"body must not exceed {limit} bytes"})
        parts.append(chunk)
    if decoder is not None and not decoder.eof:
        raise ApiError(400, {"input": f"is not valid {encoding} data (truncated)"})
    return b"".join(parts)
