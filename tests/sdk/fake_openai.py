"""A small, deterministic OpenAI-compatible server for driving the real Dynamiq SDK offline.

Stdlib only (``http.server.ThreadingHTTPServer``); binds 127.0.0.1 only.

Endpoints
---------
``POST /v1/chat/completions`` (also ``/chat/completions``)
    Deterministic answers with a realistic ``usage`` block. Behaviour, decided per request:

    * **failure** -- the model name contains ``fail`` (e.g. ``fail-model``) or a message contains
      ``[[FAIL]]``: HTTP 500 with an OpenAI-style error body and ``x-should-retry: false`` (so the
      openai client does not retry on its own; the Dynamiq node's own retry loop still does, a
      5xx being a retryable error for it).
    * **delay** -- the model name starts with ``slow`` (2 s) or a message contains ``[[SLOW:<seconds>]]``:
      the answer is delayed (used to provoke node timeouts and cancellation mid-call).
    * **function calling** -- the request has ``tools``: if no ``tool`` message follows the last user
      message, answer with one ``tool_calls`` entry for the first tool (not ``provide_final_answer``);
      once a ``tool`` message is present, call ``provide_final_answer`` if offered (Dynamiq's
      function-calling agent forces ``tool_choice=required``) or answer in plain text.
    * **ReAct text** -- the system prompt carries Dynamiq's ``Thought/Action/Action Input`` format:
      first ``Thought: ...\\nAction: <tool>\\nAction Input: {json}``, then, once an ``Observation:``
      message is present (or no tool is offered), ``Thought: ...\\nAnswer: ...``.
    * **plain chat** -- otherwise, ``Answer to: <last user message, shortened>``.

    Which tool and which arguments: a message containing ``[[call:<tool-name> {json args}]]`` picks them;
    otherwise the first tool offered and arguments derived from its JSON schema.

``POST /v1/embeddings`` (also ``/embeddings``)
    Deterministic 8-dimensional vectors.

``GET /v1/models``
    A tiny model list.

Usage
-----
As a module::

    server, base_url = start_fake_openai()   # base_url like "http://127.0.0.1:12345/v1"
    ...
    server.shutdown(); server.server_close()   # or stop_fake_openai(server)

As a script::

    python tests/sdk/fake_openai.py --port 8089
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREATED = 1_700_000_000  # fixed "created" timestamp: responses are fully deterministic
DEFAULT_SLOW_SECONDS = 2.0
FINAL_ANSWER_TOOL = "provide_final_answer"
# Tools some Dynamiq agents add on their own; never picked unless named in a [[call:...]] directive.
BUILTIN_TOOL_NAMES = {FINAL_ANSWER_TOOL, "context-manager", "context_manager", "todo-write", "todo_write"}

_CALL_RE = re.compile(r"\[\[call:(?P<name>[^\s\]]+)\s*(?P<args>\{.*?\})?\s*\]\]", re.DOTALL)
_SLOW_RE = re.compile(r"\[\[SLOW(?::(?P<secs>[0-9.]+))?\]\]")
_REACT_TOOLS_RE = re.compile(r"Action: \[Tool name from ONLY \[(?P<names>[^\]]*)\]\]")


def _text(content: Any) -> str:
    """Flatten OpenAI message content (str or list of parts) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                parts.append(str(part.get("text", "")))
            else:
                parts.append(str(part))
        return "\n".join(parts)
    return str(content)


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: ~4 characters per token, at least 1."""
    return max(1, (len(text) + 3) // 4)


def _last_user_index(messages: list[dict]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return -1


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(_CALL_RE.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _find_directive(messages: list[dict]) -> tuple[str, dict | None] | None:
    for message in messages:
        if message.get("role") == "system":
            continue
        match = _CALL_RE.search(_text(message.get("content")))
        if match:
            args = json.loads(match.group("args")) if match.group("args") else None
            return match.group("name"), args
    return None


def _args_from_schema(parameters: dict | None, user_text: str) -> dict:
    """Deterministic arguments for a tool from its JSON schema."""
    args: dict[str, Any] = {}
    props = (parameters or {}).get("properties") or {}
    for name, spec in props.items():
        if name == "thought":
            continue
        kind = spec.get("type") if isinstance(spec, dict) else None
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), None)
        if kind is None and isinstance(spec, dict) and spec.get("anyOf"):
            kind = next((s.get("type") for s in spec["anyOf"] if s.get("type") not in (None, "null")), None)
        if kind == "integer":
            args[name] = 2
        elif kind == "number":
            args[name] = 2.5
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        elif kind == "string" or kind is None:
            args[name] = _short(user_text, 200) if name in ("input", "query", "question", "text") else f"{name}-value"
    return args


class Reply:
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None, delay: float = 0.0):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.delay = delay


def _completion_body(model: str, messages: list[dict], message: dict, finish_reason: str, seq: str) -> dict:
    prompt_text = "".join(_text(m.get("content")) for m in messages)
    completion_text = _text(message.get("content")) + json.dumps(message.get("tool_calls") or "")
    prompt_tokens = count_tokens(prompt_text) + 3 * len(messages)
    completion_tokens = count_tokens(completion_text)
    return {
        "id": f"chatcmpl-fake-{seq}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake_openai",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }


def request_key(request: dict) -> str:
    """A short, stable id for a request: response and tool-call ids are derived from it, so the same
    request always gets the same answer, whatever else the server has seen."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:12]


def chat_reply(request: dict) -> Reply:
    """Decide the answer to one chat-completions request (a pure function of the request)."""
    seq = request_key(request)
    model = str(request.get("model") or "gpt-4o-mini")
    messages = request.get("messages") or []
    all_text = "\n".join(_text(m.get("content")) for m in messages)

    delay = 0.0
    slow = _SLOW_RE.search(all_text)
    if slow:
        delay = float(slow.group("secs") or DEFAULT_SLOW_SECONDS)
    elif model.startswith("slow"):
        delay = DEFAULT_SLOW_SECONDS

    if "fail" in model or "[[FAIL]]" in all_text:
        return Reply(
            500,
            {
                "error": {
                    "message": f"The server had an error while processing your request (fake failure for {model}).",
                    "type": "server_error",
                    "param": None,
                    "code": "fake_failure",
                }
            },
            headers={"x-should-retry": "false"},
            delay=delay,
        )

    last_user = _last_user_index(messages)
    user_text = _text(messages[last_user].get("content")) if last_user >= 0 else ""
    after_user = messages[last_user + 1 :] if last_user >= 0 else messages
    directive = _find_directive(messages)
    tools = request.get("tools") or []

    if tools:
        names = [t.get("function", {}).get("name") for t in tools]
        tool_answered = any(m.get("role") == "tool" for m in after_user)
        if tool_answered:
            tool_result = next(_text(m.get("content")) for m in reversed(after_user) if m.get("role") == "tool")
            answer = f"The tool returned: {_short(tool_result, 120)}"
            if FINAL_ANSWER_TOOL in names:
                call = {"thought": "I have the tool result and can answer.", "answer": answer}
                return Reply(200, _tool_call_body(model, messages, FINAL_ANSWER_TOOL, call, seq), delay=delay)
            message = {"role": "assistant", "content": answer, "refusal": None}
            return Reply(200, _completion_body(model, messages, message, "stop", seq), delay=delay)

        chosen = None
        args = None
        if directive and directive[0] in names:
            chosen, args = directive
        if chosen is None:
            chosen = next((n for n in names if n not in BUILTIN_TOOL_NAMES), None)
        if chosen is None and FINAL_ANSWER_TOOL in names:
            call = {"thought": "No tool is needed.", "answer": f"Answer to: {_short(user_text)}"}
            return Reply(200, _tool_call_body(model, messages, FINAL_ANSWER_TOOL, call, seq), delay=delay)
        if chosen is not None:
            spec = next(t for t in tools if t.get("function", {}).get("name") == chosen)
            parameters = spec.get("function", {}).get("parameters") or {}
            if args is None:
                args = _args_from_schema(parameters, user_text)
            if "thought" in (parameters.get("properties") or {}):
                args = {"thought": f"I should call {chosen}.", **args}
            return Reply(200, _tool_call_body(model, messages, chosen, args, seq), delay=delay)

    system_text = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    react = _REACT_TOOLS_RE.search(system_text)
    if react or "Answer: [Your" in system_text:
        names = [n.strip() for n in (react.group("names") if react else "").split(",") if n.strip()]
        observed = any("Observation:" in _text(m.get("content")) for m in messages if m.get("role") != "system")
        chosen = None
        args = None
        if not observed and names:
            if directive and directive[0] in names:
                chosen, args = directive
            else:
                chosen = next((n for n in names if n not in BUILTIN_TOOL_NAMES), None)
        if chosen:
            args = args if args is not None else {"input": _short(user_text, 200)}
            content = f"Thought: I should use the {chosen} tool.\nAction: {chosen}\nAction Input: {json.dumps(args)}"
        elif observed:
            observation = next(
                _text(m.get("content"))
                for m in reversed(messages)
                if m.get("role") != "system" and "Observation:" in _text(m.get("content"))
            )
            observation = observation.split("Observation:", 1)[1]
            content = f"Thought: I now know the final answer.\nAnswer: The tool returned: {_short(observation, 120)}"
        else:
            content = f"Thought: I can answer directly.\nAnswer: Answer to: {_short(user_text)}"
        message = {"role": "assistant", "content": content, "refusal": None}
        return Reply(200, _completion_body(model, messages, message, "stop", seq), delay=delay)

    message = {"role": "assistant", "content": f"Answer to: {_short(user_text)}", "refusal": None}
    return Reply(200, _completion_body(model, messages, message, "stop", seq), delay=delay)


def _tool_call_body(model: str, messages: list[dict], name: str, args: dict, seq: str) -> dict:
    message = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": f"call_fake_{seq}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ],
    }
    return _completion_body(model, messages, message, "tool_calls", seq)


def embeddings_reply(request: dict) -> Reply:
    inputs = request.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    data = []
    total = 0
    for i, item in enumerate(inputs or []):
        text = item if isinstance(item, str) else json.dumps(item)
        total += count_tokens(text)
        digest = hashlib.sha256(text.encode()).digest()
        data.append({"object": "embedding", "index": i, "embedding": [round(b / 255.0, 6) for b in digest[:8]]})
    return Reply(
        200,
        {
            "object": "list",
            "data": data,
            "model": request.get("model") or "text-embedding-3-small",
            "usage": {"prompt_tokens": total, "total_tokens": total},
        },
    )


def _sse_chunks(body: dict) -> list[bytes]:
    """Render a chat completion as an SSE stream (content/tool calls, then a usage chunk)."""
    choice = body["choices"][0]
    message = choice["message"]
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [dict(tc, index=i) for i, tc in enumerate(message["tool_calls"])]
    base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    events = [
        dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}]),
        dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]),
        dict(base, choices=[], usage=body["usage"]),
    ]
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-openai/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence default stderr logging
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _send(self, reply: Reply, stream: bool = False) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        if stream and reply.status == 200:
            chunks = _sse_chunks(reply.body)
            payload = b"".join(chunks)
            content_type = "text/event-stream"
        else:
            payload = json.dumps(reply.body).encode()
            content_type = "application/json"
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            models = ["gpt-4o-mini", "gpt-4o", "fail-model", "slow-model"]
            body = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in models]}
            self._send(Reply(200, body))
        else:
            self._send(Reply(404, {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}}))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(Reply(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}}))
            return
        server: FakeOpenAIServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.seq += 1
            server.requests.append({"path": path, "body": request})
        if path in ("/v1/chat/completions", "/chat/completions"):
            self._send(chat_reply(request), stream=bool(request.get("stream")))
        elif path in ("/v1/embeddings", "/embeddings"):
            self._send(embeddings_reply(request))
        else:
            self._send(Reply(404, {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}}))


class FakeOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], verbose: bool = False):
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.seq = 0
        self.requests: list[dict] = []
        self.verbose = verbose


def start_fake_openai(port: int = 0, verbose: bool = False) -> tuple[FakeOpenAIServer, str]:
    """Start the server on 127.0.0.1 (port 0 = a free port) in a daemon thread.

    Returns ``(server, base_url)`` where ``base_url`` ends with ``/v1``.
    """
    server = FakeOpenAIServer(("127.0.0.1", port), verbose=verbose)
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    host, bound_port = server.server_address[:2]
    return server, f"http://{host}:{bound_port}/v1"


def stop_fake_openai(server: FakeOpenAIServer) -> None:
    server.shutdown()
    server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0 = free port)")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args()
    server = FakeOpenAIServer(("127.0.0.1", args.port), verbose=args.verbose)
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
