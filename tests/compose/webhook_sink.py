"""A webhook sink for the compose test: stores every POSTed body, lists them on GET."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED: list = []


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            RECEIVED.append(json.loads(body))
        except ValueError:
            RECEIVED.append({"raw": body.decode("utf-8", "replace")})
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        data = json.dumps(RECEIVED).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8080), Sink).serve_forever()  # noqa: S104 (container)
