"""A stand-in for a vLLM server that answers wrongly on purpose (issue #27): bound to 127.0.0.1 only,
serving at most `max_requests` requests and for at most `max_seconds`, then it stops by itself.

    with StubServer("string_ids") as stub:     # stub.url = "http://127.0.0.1:<port>"
        ...

Modes: "ok" (answers as vLLM does: models, completions of ids < 20 with log-probs, LoRA loads),
"non_json" (completions answered with HTML), "empty_data" (GET /v1/models -> {"data": []}),
"string_ids" (token ids as strings), "http500" (every completion fails with HTTP 500),
"hang_health" (/health never answers). Used by tests/test_bad_state.py and bench/faults.py.
"""
from __future__ import annotations

import http.server
import json
import random
import threading
import time

MODES = ("ok", "non_json", "empty_data", "string_ids", "http500", "hang_health")


class StubServer:
    def __init__(self, mode: str, max_requests: int = 500, max_seconds: float = 120.0, max_model_len: int = 256):
        if mode not in MODES:
            raise ValueError(f"unknown stub mode {mode!r}; one of {MODES}")
        self.mode, self.max_requests, self.max_model_len = mode, max_requests, max_model_len
        self.requests = 0
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body, content_type="application/json"):
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _count(self) -> bool:
                stub.requests += 1
                if stub.requests > stub.max_requests:
                    self._send(503, {"error": "stub: request budget spent"})
                    threading.Thread(target=stub.stop, daemon=True).start()
                    return False
                return True

            def do_GET(self):
                if not self._count():
                    return
                if self.path == "/health":
                    if stub.mode == "hang_health":
                        time.sleep(stub.deadline - time.monotonic())   # never answers before the stub stops
                        return
                    return self._send(200, "")
                if self.path == "/v1/models":
                    if stub.mode == "empty_data":
                        return self._send(200, {"data": []})
                    return self._send(200, {"data": [{"id": "base", "max_model_len": stub.max_model_len}]})
                self._send(404, {"error": "not found"})

            def do_POST(self):
                if not self._count():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                if self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                    return self._send(200, "Success", content_type="text/plain")
                if self.path != "/v1/completions":
                    return self._send(404, {"error": "not found"})
                if stub.mode == "http500":
                    return self._send(500, {"error": "stub: internal error"})
                if stub.mode == "non_json":
                    return self._send(200, "<html>not vLLM</html>", content_type="text/html")
                rng = random.Random(payload.get("seed", 0))
                choices = []
                for i in range(int(payload.get("n", 1))):
                    k = max(1, min(int(payload.get("max_tokens", 1)), 4))
                    ids = [rng.randrange(3, 20) for _ in range(k)]
                    choices.append({"index": i, "token_ids": [str(t) for t in ids] if stub.mode == "string_ids" else ids,
                                    "logprobs": {"token_logprobs": [-1.0] * k}, "finish_reason": "length",
                                    "text": ""})
                self._send(200, {"choices": choices})

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        self._server.timeout = 0.2
        while time.monotonic() < self.deadline and not getattr(self, "_stopped", False):
            self._server.handle_request()
        self._server.server_close()

    def stop(self):
        self._stopped = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self._thread.join(timeout=5)
