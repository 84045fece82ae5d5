"""The kafka-ui stand-in: the cluster of KAFKA_CLUSTERS_0_* (bootstrap, SASL properties), read-only.

GET / lists the topics with their partition counts; GET /actuator/health answers {"status": "UP"} only while
the sign-in and the listing work, {"status": "DOWN", ...} with the reason otherwise.
"""

import html
import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from confluent_kafka.admin import AdminClient

PREFIX = "KAFKA_CLUSTERS_0_PROPERTIES_"


def client_config() -> dict[str, str]:
    config = {"bootstrap.servers": os.environ["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"]}
    for name, value in os.environ.items():
        if not name.startswith(PREFIX):
            continue
        key = name[len(PREFIX) :].lower().replace("_", ".")
        if key == "sasl.jaas.config":
            found = dict(re.findall(r'(username|password)="([^"]*)"', value))
            config["sasl.username"], config["sasl.password"] = found["username"], found["password"]
        else:
            config[key] = value
    return config


ADMIN = AdminClient(client_config())


def topics() -> dict[str, int]:
    listed = ADMIN.list_topics(timeout=5)
    return {name: len(meta.partitions) for name, meta in sorted(listed.topics.items())}


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            found, error = topics(), None
        except Exception as exc:  # any client error is the page's answer, not a crash
            found, error = {}, str(exc)
        if self.path.startswith("/actuator/health"):
            body = json.dumps({"status": "UP"} if error is None else {"status": "DOWN", "reason": error})
            self.answer(200 if error is None else 503, "application/json", body)
        else:
            rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{n}</td></tr>" for t, n in found.items())
            self.answer(
                200,
                "text/html",
                f"<h1>{html.escape(os.environ.get('KAFKA_CLUSTERS_0_NAME', ''))}</h1>"
                f"<p>{html.escape(error or '')}</p><table>{rows}</table>",
            )

    def answer(self, status: int, kind: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


ThreadingHTTPServer(("0.0.0.0", 8080), Page).serve_forever()
