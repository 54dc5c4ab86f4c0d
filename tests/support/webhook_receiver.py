#!/usr/bin/env python3
"""A webhook receiver for the crate's tests, independent of the crate: each
request is verified with the Standard Webhooks reference library (PyPI
`standardwebhooks`) and recorded as one JSON line in LOG.

    webhook_receiver.py PORT SECRET LOG [--fail-first N] [--hold-first SECONDS]

--fail-first N answers the first N requests 500; --hold-first S waits S
seconds before answering the first request (a sender killed meanwhile never
sees the answer). A request whose signature does not verify is answered 400.
Prints "ready" once listening; stops on SIGTERM.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("secret")
parser.add_argument("log")
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--hold-first", type=float, default=0.0)
args = parser.parse_args()

webhook = Webhook(args.secret)
lock = threading.Lock()
seen = {"requests": 0}


def record(line):
    with lock:
        with open(args.log, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with lock:
            seen["requests"] += 1
            number = seen["requests"]
        line = {
            "n": number,
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
        }
        try:
            payload = webhook.verify(body.decode("utf-8"), headers)
            line.update(verified=True, type=payload["type"], key_id=payload["data"]["key_id"])
        except (WebhookVerificationError, ValueError, KeyError) as err:
            line.update(verified=False, error=str(err))
        if number == 1 and args.hold_first > 0:
            record(dict(line, status="held"))
            time.sleep(args.hold_first)
        status = 200
        if not line["verified"]:
            status = 400
        elif number <= args.fail_first:
            status = 500
        try:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()
            self.wfile.flush()
        except OSError:
            status = "unanswered"
        record(dict(line, status=status))

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print("ready", flush=True)
sys.stdout.flush()
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
