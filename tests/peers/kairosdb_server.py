#!/usr/bin/env python3
"""A test KairosDB REST server: POST /api/v1/datapoints, validated as
KairosDB validates (protocols.md section 5), recording what it accepts.

No KairosDB server can be installed here, so this stands in for one. It is
written independently of tsrelay's codec. Usage:

    kairosdb_server.py PORT RECORD_FILE [FAIL_FIRST_N]

Every accepted datapoint is appended to RECORD_FILE as one JSON line
{"name","tags","timestamp","value","type"?, "ttl"?}. The first FAIL_FIRST_N
requests are answered 503 without looking at them (to test retries).
Names starting with `reject.` are refused (400), so a test can see how a
client handles a 400 that no valid KairosDB body would cause. Answers: 204
when everything is valid; 400 {"errors": [...]} otherwise, with
the valid datapoints still recorded (KairosDB ingests partially).
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, RECORD = int(sys.argv[1]), sys.argv[2]
FAIL_FIRST = int(sys.argv[3]) if len(sys.argv) > 3 else 0
lock = threading.Lock()
requests_seen = [0]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def validate(metrics):
    errors, accepted = [], []
    if isinstance(metrics, dict):
        metrics = [metrics]
    if not isinstance(metrics, list):
        return ["Invalid start of json."], []
    for i, m in enumerate(metrics):
        if not isinstance(m, dict):
            errors.append("metric[%d] is not an object." % i)
            continue
        name = m.get("name")
        if name is None:
            errors.append("metric[%d].name may not be null." % i)
            continue
        if not isinstance(name, str) or name == "":
            errors.append("metric[%d].name may not be empty." % i)
            continue
        ctx = "metric[%d](name=%s)" % (i, name)
        if name.startswith("reject."):
            # Not KairosDB: lets a test see how a relay handles a 400.
            errors.append("%s.name is refused by this test server." % ctx)
            continue
        tags = m.get("tags") or {}
        if not isinstance(tags, dict) or len(tags) < 1:
            errors.append("%s.tags count must be greater than or equal to 1." % ctx)
            continue
        bad_tag = False
        for k, v in tags.items():
            if not isinstance(k, str) or k == "":
                errors.append("%s.tag[%s].name may not be empty." % (ctx, k)); bad_tag = True
            if not isinstance(v, str) or v == "":
                errors.append("%s.tag[%s].value may not be empty." % (ctx, k)); bad_tag = True
        if bad_tag:
            continue
        mtype = m.get("type")
        if mtype not in (None, "long", "double", "string"):
            errors.append("Unregistered data point type '%s'" % mtype)
            continue
        points = []
        ts = m.get("time", m.get("timestamp"))
        if "value" in m or ts is not None:
            if ts is None:
                errors.append("%s.timestamp may not be null." % ctx)
            elif not is_int(ts):
                errors.append("%s.timestamp must be an integer of milliseconds." % ctx)
            elif m.get("value") is None:
                errors.append("%s.value may not be null." % ctx)
            else:
                points.append((ts, m["value"]))
        for j, dp in enumerate(m.get("datapoints") or []):
            if not isinstance(dp, list) or len(dp) < 2 or dp[0] is None:
                errors.append("%s.datapoints[%d].timestamp cannot be null or empty." % (ctx, j))
            elif not is_int(dp[0]):
                errors.append("%s.datapoints[%d].timestamp must be an integer of milliseconds." % (ctx, j))
            elif dp[1] is None:
                errors.append("%s.datapoints[%d].value may not be null." % (ctx, j))
            else:
                points.append((dp[0], dp[1]))
        for ts, value in points:
            record = {"name": name, "tags": tags, "timestamp": ts, "value": value}
            if mtype:
                record["type"] = mtype
            if m.get("ttl"):
                record["ttl"] = m["ttl"]
            accepted.append(record)
    return errors, accepted


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            requests_seen[0] += 1
            failing = requests_seen[0] <= FAIL_FIRST
        if self.path != "/api/v1/datapoints":
            return self.answer(404)
        if failing:
            return self.answer(503, b'{"errors":["unavailable"]}')
        try:
            if "gzip" in self.headers.get("Content-Encoding", "") or \
                    self.headers.get("Content-Type", "").startswith("application/gzip"):
                body = gzip.decompress(body)
            metrics = json.loads(body) if body else None
        except Exception as e:  # malformed gzip or JSON
            return self.answer(400, json.dumps({"errors": [str(e)]}).encode())
        if metrics is None:
            return self.answer(400, b'{"errors":["Invalid json. No content due to end of input."]}')
        errors, accepted = validate(metrics)
        with lock, open(RECORD, "a") as out:
            for record in accepted:
                out.write(json.dumps(record) + "\n")
        if errors:
            return self.answer(400, json.dumps({"errors": errors}).encode())
        return self.answer(204)


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
