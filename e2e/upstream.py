"""A tiny upstream service for the demo and the end-to-end tests.

GET/POST/... any path: 200 with a small JSON body.
/status/<code>: answers with that status.
?delay_ms=<n>: answers after n milliseconds (at most 5000).
Upgrade: websocket: 101 Switching Protocols, then echoes what the client sends until it closes.
Run: python3 upstream.py [port]   (binds 127.0.0.1; UPSTREAM_HOST overrides)
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True

    def _answer(self):
        if self.headers.get("upgrade", "").lower() == "websocket":
            return self._upgrade()
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status = 200
        parts = self.path.split("?")[0].split("/")
        if len(parts) >= 3 and parts[1] == "status" and parts[2].isdigit():
            status = int(parts[2])
        delay = parse_qs(urlsplit(self.path).query).get("delay_ms", ["0"])[0]
        if delay.isdigit():
            time.sleep(min(int(delay), 5000) / 1000)
        body = json.dumps({"service": "upstream", "method": self.command, "path": self.path}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _upgrade(self):
        """A long-lived upgraded stream: raw bytes echoed (no WebSocket framing: Envoy only
        relays them), until the client closes."""
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        while chunk := self.connection.recv(4096):
            self.connection.sendall(chunk)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8081
    host = os.environ.get("UPSTREAM_HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"upstream listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
