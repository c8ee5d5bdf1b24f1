"""A real HTTP receiver for webhook tests: records every request, answers from a script of responses.

``WebhookReceiver(responses=[500, 500, 200])`` answers the first two deliveries with 500 and then
200 (the last entry repeats). An entry may be ``("redirect", "/elsewhere")`` or ``("sleep", seconds)``.
``verify(secret)`` recomputes each request's signature the way a receiver would.
"""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    def signature_valid(self, secret: str) -> bool:
        timestamp = self.headers.get("X-Studio-Timestamp", "")
        expected = (
            "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        )
        return hmac.compare_digest(expected, self.headers.get("X-Studio-Signature", ""))


class WebhookReceiver:
    def __init__(self, responses=None):
        self.responses = list(responses or [200])
        self.received: list[Received] = []
        self._lock = threading.Lock()

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    index = min(len(receiver.received), len(receiver.responses)) - 1
                    answer = receiver.responses[index]
                if isinstance(answer, tuple) and answer[0] == "sleep":
                    time.sleep(answer[1])
                    answer = 200
                if isinstance(answer, tuple) and answer[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", answer[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = b"ok" if answer < 400 else b"receiver error"
                self.send_response(answer)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
