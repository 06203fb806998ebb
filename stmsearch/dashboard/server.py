"""``stmsearch dashboard --serve``: the dashboard page from a local HTTP server.

The page polls ``/api/version`` every few seconds and reloads when a trial has finished
since it was built; the server rebuilds the page only when the studies have changed.
Binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from optuna.storages import BaseStorage

from ..results.records import as_storage, data_version
from .build import build_html
from .views import ViewSet, load_views


class DashboardApp:
    """The studies to show and the last page built for them."""

    def __init__(self, storage: str | BaseStorage, study_names: list[str], views: ViewSet | str | Path | None = None):
        self.storage = as_storage(storage)
        self.study_names = list(study_names)
        self.views = views if isinstance(views, ViewSet) else load_views(views)
        self._lock = threading.Lock()
        self._page: tuple[str, bytes] | None = None  # (version, html)

    def version(self) -> str:
        return data_version(self.storage, self.study_names)

    def page(self) -> bytes:
        """The page, rebuilt when a trial has finished since the last build."""
        with self._lock:
            current = self.version()
            if self._page is None or self._page[0] != current:
                html = build_html(self.storage, self.study_names, self.views, poll=True)
                self._page = (current, html.encode("utf-8"))
            return self._page[1]


def handler_for(app: DashboardApp) -> type[BaseHTTPRequestHandler]:
    """A request handler bound to ``app``: ``/`` (the page) and ``/api/version``, GET and HEAD."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "stmsearch-dashboard"  # the Server header names no Python version

        def version_string(self) -> str:
            return self.server_version

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._respond(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._respond(body=False)

        def _content(self) -> tuple[int, str, bytes]:
            path = self.path.split("?", 1)[0]
            try:
                if path in ("/", "/index.html"):
                    return 200, "text/html; charset=utf-8", app.page()
                if path == "/api/version":
                    return 200, "application/json", json.dumps({"version": app.version()}).encode()
                return 404, "text/plain; charset=utf-8", b"not found\n"
            except Exception as exc:  # show the reason in the browser rather than a dropped connection
                return 500, "text/plain; charset=utf-8", f"dashboard error: {exc}\n".encode()

        def _respond(self, body: bool) -> None:
            status, content_type, data = self._content()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the browser went away mid-page: not our error
                sys.stderr.write(f"dashboard: {self.client_address[0]} closed the connection before "
                                 f"{self.path} was sent\n")
                self.close_connection = True

        def log_message(self, format: str, *args) -> None:  # keep the terminal for errors only
            pass

    return Handler


def make_server(app: DashboardApp, host: str = "127.0.0.1", port: int = 8050) -> ThreadingHTTPServer:
    """A bound, not yet serving, server (port 0 picks a free one: see ``server.server_address``)."""
    server = ThreadingHTTPServer((host, port), handler_for(app))
    server.daemon_threads = True
    return server
