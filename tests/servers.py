"""Test helpers: a real threaded HTTP server on 127.0.0.1 that records requests, and a real Pushgateway.

``RecordingServer`` answers 200 (or ``status``), can answer 500 for the first ``fail_first`` requests,
and records every request (method, path, headers, body). ``closed_port()`` gives a loopback port with
nothing listening (a down endpoint). ``pushgateway()`` starts the ``prometheus-pushgateway`` binary on
a free loopback port and stops it on exit; a missing binary fails the test (never skips).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

PUSHGATEWAY_BINARY = "prometheus-pushgateway"
PUSHGATEWAY_PATHS = ("/usr/bin/prometheus-pushgateway", "/usr/local/bin/prometheus-pushgateway")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class RecordingServer:
    """A threaded HTTP server on 127.0.0.1:<free port>; use as a context manager."""

    fail_first: int = 0
    status: int = 200
    fail_status: int = 500
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _respond(self, req: Recorded) -> int:
        with self._lock:
            self.requests.append(req)
            n = len(self.requests)
        return self.fail_status if n <= self.fail_first else self.status

    def __enter__(self) -> RecordingServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, dict(self.headers.items()), body)
                code = owner._respond(rec)
                payload = b'{"status": "ok"}' if code < 300 else b'{"status": "error"}'
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port with nothing listening: connections to it are refused at once."""
    return free_port()


def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make urllib talk to loopback directly, whatever proxy the environment sets."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def pushgateway_binary() -> str:
    """The Pushgateway binary's path; fails the test (never skips) when it is not installed."""
    found = shutil.which(PUSHGATEWAY_BINARY) or next(
        (p for p in PUSHGATEWAY_PATHS if os.path.exists(p)), None
    )
    if found is None:
        pytest.fail(
            "prometheus-pushgateway binary not found: install it with "
            "`apt-get install prometheus-pushgateway` (CI installs it)",
            pytrace=False,
        )
    return found


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode("utf-8")


@contextlib.contextmanager
def pushgateway(startup_timeout: float = 15.0) -> Iterator[str]:
    """Run the real Pushgateway on 127.0.0.1:<free port>; yields its base URL, stops it on exit."""
    binary = pushgateway_binary()
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"prometheus-pushgateway exited with code {proc.returncode}: {err[-2000:]}")
            try:
                if _get(f"{base}/-/ready", timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus-pushgateway did not become ready within {startup_timeout}s")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


def read_metrics(base: str) -> str:
    """The Pushgateway's ``/metrics`` exposition text."""
    status, text = _get(f"{base}/metrics")
    assert status == 200
    return text
