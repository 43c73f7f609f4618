"""The HTTP floor: a bare Litestar app that reads the body of ``POST /v1/traces`` and answers 200.

Served by uvicorn exactly like the service (``uvicorn bench.echo_app:app --workers N``, uvloop and
httptools), with the service's 200 answer (``{"message":"ok"}``); no auth, validation or storage.
"""

from __future__ import annotations

from litestar import Litestar, MediaType, Request, post


@post("/v1/traces", status_code=200, media_type=MediaType.JSON)
async def ingest(request: Request) -> bytes:  # type: ignore[type-arg]
    await request.body()
    return b'{"message":"ok"}'


app = Litestar(route_handlers=[ingest], openapi_config=None, logging_config=None, debug=False)
