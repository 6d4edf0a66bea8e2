"""A recording stand-in for the Kubernetes API server's Job endpoints, so the real `kubernetes`
client can be exercised without a cluster (none can run on these machines)."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeApiServer(BaseHTTPRequestHandler):
    """Records what the client sends and answers like the API server's Job endpoints."""

    posted: list = []
    deleted: list = []
    status_conditions: list = []

    def log_message(self, *args):
        pass

    def _reply(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeApiServer.posted.append((self.path, body))
        self._reply(201, {**body, "status": {}})

    def do_DELETE(self):
        FakeApiServer.deleted.append(self.path)
        self._reply(200, {"apiVersion": "v1", "kind": "Status", "status": "Success"})

    def do_GET(self):
        name = self.path.rstrip("/").split("/")[-2]
        self._reply(200, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                          "status": {"conditions": FakeApiServer.status_conditions}})


@contextlib.contextmanager
def fake_api_client():
    """A `kubernetes.client.ApiClient` talking to a fresh FakeApiServer."""
    from kubernetes import client

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_port}"
    FakeApiServer.posted.clear()
    FakeApiServer.deleted.clear()
    FakeApiServer.status_conditions = []
    try:
        yield client.ApiClient(config)
    finally:
        server.shutdown()
