"""Capture the real Dynamiq SDK's trace batches as fixtures.

Runs in the SDK venv. Starts the fake OpenAI server and a tiny capturing HTTP server (answers
``{"message": "ok"}`` 200 to ``POST /v1/traces`` and keeps every request body byte for byte plus
its headers), runs the scenarios of ``scenarios.py`` in order, and writes each captured body,
unchanged, to ``tests/fixtures/sdk/<scenario>.<n>.json`` (n = 1, 2, ... per batch, in arrival
order), plus ``manifest.json`` and ``README.md``.

Usage::

    python tests/sdk/capture.py                      # every scenario
    python tests/sdk/capture.py --scenario linear    # some (repeatable); other fixtures are kept
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenarios  # noqa: E402  (sets the offline environment before dynamiq is imported)
from fake_openai import start_fake_openai, stop_fake_openai  # noqa: E402

DEFAULT_OUT = HERE.parent / "fixtures" / "sdk"
ACCESS_KEY = "test-access-key"
RECORDED_HEADERS = ("Content-Type", "Authorization", "User-Agent", "Content-Length", "Accept-Encoding")


class _CaptureHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server: CaptureServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.requests.append(
                {
                    "path": self.path,
                    "headers": {k: v for k, v in self.headers.items()},
                    "body": body,
                    "received": time.monotonic(),
                }
            )
        if self.path.split("?", 1)[0] == "/v1/traces":
            payload, status = b'{"message":"ok"}', 200
        else:
            payload, status = b'{"message":"not found"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class CaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CaptureHandler)
        self.lock = threading.Lock()
        self.requests: list[dict] = []

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def wait_for(server: CaptureServer, start: int, expected: int, timeout: float = 5.0, settle: float = 0.3) -> None:
    """Wait until ``expected`` new requests arrived, then a little longer for stragglers."""
    deadline = time.monotonic() + timeout
    while server.count() - start < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(settle)


def scrub_paths(body: bytes) -> bytes:
    """Rewrite this machine's install prefixes in traceback file paths to neutral ones.

    The only change made to a captured body: ``<venv>/lib/...`` becomes ``/venv/lib/...``, the base
    interpreter's prefix becomes ``/python`` and the repository root ``/repo``, so fixtures name no
    machine's directories. Lengths change; nothing else does.
    """
    prefixes = {sys.prefix: "/venv", sys.base_prefix: "/python", str(Path(__file__).resolve().parents[2]): "/repo"}
    for prefix, neutral in sorted(prefixes.items(), key=lambda item: -len(item[0])):
        body = body.replace(prefix.encode(), neutral.encode())
    return body


def describe_batch(body: bytes) -> dict:
    data = json.loads(body)
    runs = data.get("runs", [])
    statuses: dict[str, int] = {}
    types: dict[str, int] = {}
    for run in runs:
        statuses[str(run.get("status"))] = statuses.get(str(run.get("status")), 0) + 1
        types[str(run.get("type"))] = types.get(str(run.get("type")), 0) + 1
    return {
        "runs": len(runs),
        "run_types": types,
        "run_statuses": statuses,
        "trace_ids": sorted({str(r.get("trace_id")) for r in runs}),
    }


README = """# Real Dynamiq SDK trace batches

Every `<scenario>.<n>.json` here is the **raw request body, byte for byte**, that the real Dynamiq
Python SDK (`dynamiq=={dynamiq_version}`, with `litellm=={litellm_version}`, `openai=={openai_version}`,
Python {python_version}) POSTed to `/v1/traces` — `n` counts the batches of a scenario in arrival order.
Nothing was re-serialized or pretty-printed: bodies are compact `orjson` output (UTF-8, non-ASCII not
escaped, keys in the SDK's dataclass field order).

How they were produced: `tests/sdk/capture.py` starts `tests/sdk/fake_openai.py` (a deterministic
OpenAI-compatible server on 127.0.0.1) and a capturing HTTP server on 127.0.0.1 that answers
`{{"message":"ok"}}`, then runs the scenarios in `tests/sdk/scenarios.py`. Each scenario builds real
Dynamiq workflows (real nodes, agents, OpenAI connection → openai client → litellm) with a real
`TracingCallbackHandler(client=DynamiqTracingClient(base_url=..., access_key="{access_key}"))`, so the SDK
itself sends the batches (headers: `Content-Type: application/json`, `Authorization: Bearer {access_key}`,
`User-Agent: <SDK user agent>`). No other network was used.

Run ids, timestamps and durations change on every regeneration; names, structure, statuses, usage
numbers (the fake server's, deterministic) and batch counts do not.

## Regenerate

From the repository root, with a venv that has the SDK installed (`pip install dynamiq=={dynamiq_version}`):

```
<venv>/bin/python tests/sdk/capture.py                 # all scenarios
<venv>/bin/python tests/sdk/capture.py --scenario large  # only some; other fixtures are kept
```

`manifest.json` lists every file with its batch index, size, run count, run statuses and the
request headers; `scenarios.py --help` documents how to run the scenarios against a live service.

## Scenarios

{scenario_table}
"""


def build_readme(manifest: dict) -> str:
    rows = ["| scenario | batches | runs per batch | bytes per batch | notes |", "|---|---|---|---|---|"]
    for name, entry in manifest["scenarios"].items():
        batches = entry["batches"]
        rows.append(
            "| `{}` | {} | {} | {} | {} |".format(
                name,
                len(batches),
                ", ".join(str(b["runs"]) for b in batches),
                ", ".join(str(b["bytes"]) for b in batches),
                (entry.get("doc") or "").replace("|", "/") + (" " + entry["notes"] if entry.get("notes") else ""),
            )
        )
    return README.format(
        dynamiq_version=manifest["dynamiq_version"],
        litellm_version=manifest["litellm_version"],
        openai_version=manifest["openai_version"],
        python_version=manifest["python_version"],
        access_key=ACCESS_KEY,
        scenario_table="\n".join(rows),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", default=[], choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture directory (default: tests/fixtures/sdk)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    names = args.scenario or list(scenarios.SCENARIOS)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    if not args.verbose:
        import logging

        logging.getLogger("dynamiq").setLevel(logging.WARNING)
        logging.getLogger("dynamiq.utils.logger").setLevel(logging.ERROR)
        logging.getLogger("httpx").setLevel(logging.WARNING)

    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"scenarios": {}}
    manifest.update(
        {
            "dynamiq_version": version("dynamiq"),
            "litellm_version": version("litellm"),
            "openai_version": version("openai"),
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "generator": "tests/sdk/capture.py",
            "endpoint": "POST /v1/traces",
        }
    )

    fake, llm_url = start_fake_openai()
    capture = CaptureServer()
    threading.Thread(target=capture.serve_forever, name="capture", daemon=True).start()
    ctx = scenarios.Ctx(base_url=capture.base_url, access_key=ACCESS_KEY, llm_url=llm_url)
    problems = []
    try:
        for name in names:
            start = capture.count()
            summary = scenarios.run_scenario(name, ctx)
            expected = summary.get("expected_batches", 1)
            wait_for(capture, start, expected)
            with capture.lock:
                captured = capture.requests[start:]
            for stale in out.glob(f"{name}.*.json"):
                if stale.name.split(".")[1].isdigit():
                    stale.unlink()
            batches = []
            for index, request in enumerate(captured, start=1):
                path = out / f"{name}.{index}.json"
                request["body"] = scrub_paths(request["body"])
                path.write_bytes(request["body"])
                headers = {k: v for k, v in request["headers"].items() if k in RECORDED_HEADERS}
                batches.append(
                    {
                        "file": path.name,
                        "bytes": len(request["body"]),
                        **describe_batch(request["body"]),
                        "headers": headers,
                    }
                )
            manifest["scenarios"][name] = {
                "doc": " ".join((scenarios.SCENARIOS[name].__doc__ or "").split()),
                "notes": summary.get("notes", ""),
                "expected_batches": expected,
                "batches": batches,
            }
            if not summary.get("ok"):
                problems.append(f"{name}: scenario error {summary.get('error')}")
            if len(batches) != expected:
                problems.append(f"{name}: expected {expected} batches, captured {len(batches)}")
            status = "ok" if summary.get("ok") and len(batches) == expected else "PROBLEM"
            sizes = ", ".join(f"{b['bytes']} B/{b['runs']} runs" for b in batches)
            print(f"{name}: {status}; {len(batches)} batch(es): {sizes}", flush=True)
    finally:
        capture.shutdown()
        capture.server_close()
        stop_fake_openai(fake)

    order = list(scenarios.SCENARIOS)
    manifest["scenarios"] = dict(sorted(manifest["scenarios"].items(), key=lambda kv: order.index(kv[0])))
    manifest["total_bytes"] = sum(b["bytes"] for s in manifest["scenarios"].values() for b in s["batches"])
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(build_readme(manifest))
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
