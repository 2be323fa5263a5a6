#!/usr/bin/env python3
"""Self-test of irondb_server.py: starts it on a free port, posts the
FlatBuffer fixtures, the TSV samples of protocols.md 6.1, the circllhist
examples of section 8.4 and a set of bad inputs, and checks what it answers
and records. FlatBuffers beyond the fixtures are built with `flatc --binary`
from JSON and the repository's schema files. Run with /usr/bin/python3:

    tests/peers/irondb_server_selftest.py
"""
import base64
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SCHEMA = os.path.join(ROOT, "schema")
FB_TYPE = "application/x-circonus-metric-list-flatbuffer"
UUID_FIELD = "example.com`http`c_123_987654::http`1b988fd7-d1e1-48ec-848e-55709511d43f"
UUID_BYTES = list(bytes.fromhex("1b988fd7d1e248ec848e55709511d43f"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, fail_first):
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.record = os.path.join(self.dir.name, "record.jsonl")
        self.child = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "irondb_server.py"), str(self.port),
             self.record, str(fail_first)])
        deadline = time.time() + 20
        while True:
            assert self.child.poll() is None, "server exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.05)
        self.seen = {"": 0, ".errors": 0}

    def lines(self, suffix):
        try:
            with open(self.record + suffix) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def new(self, suffix=""):
        """Lines added to RECORD_FILE(+suffix) since the last call."""
        lines = self.lines(suffix)
        out, self.seen[suffix] = lines[self.seen[suffix]:], len(lines)
        return out

    def post(self, body, headers=None, method="POST", path="/raw"):
        if isinstance(body, str):
            body = body.encode()
        request = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path),
                                         data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        return status, json.loads(text) if text else None

    def stop(self):
        self.child.terminate()
        self.child.wait(10)
        self.dir.cleanup()


def flatbuffer(workdir, generation, document):
    """A MetricList built by flatc from JSON with schema/circonus_<generation>."""
    source = os.path.join(workdir, "in.json")
    with open(source, "w") as f:
        json.dump(document, f)
    subprocess.run(["flatc", "--binary", "-o", workdir,
                    os.path.join(SCHEMA, "circonus_" + generation, "metric_list.fbs"), source],
                   check=True)
    with open(os.path.join(workdir, "in.bin"), "rb") as f:
        return f.read()


def ok(n, updated=None, errors=0):
    return 200, {"records": n, "updated": n if updated is None else updated,
                 "misdirected": 0, "errors": errors}


def check(actual, expected, what):
    assert actual == expected, "%s:\n  got      %r\n  expected %r" % (what, actual, expected)


def fb_headers(count):
    return {"Content-Type": FB_TYPE, "X-Snowth-Datapoints": str(count)}


def record(fmt, name, timestamp_ms, kind, value, **over):
    base = {"format": fmt, "name": name, "tags": {}, "raw_name": name,
            "timestamp_ms": timestamp_ms, "type": kind, "value": value,
            "cumulative": None, "account_id": 123,
            "check_uuid": "1b988fd7-d1e1-48ec-848e-55709511d43f",
            "check_name": "c_123_987654::http", "target": "example.com", "module": "http"}
    base.update(over)
    return base


def tsv(kind, name, rest, timestamp="1700000000.123"):
    return "%s\t%s\t%s\t%s\t%s" % (kind, timestamp, UUID_FIELD, name, rest)


def bucket_key(val, exp):
    if val == -1 and exp == 0:
        return (0,)
    if val == 0:
        return (2,)
    return (1, -exp, val) if val < 0 else (3, exp, val)


def circllhist_examples():
    """[(label, base64, bins sorted on the real line)] from the fixture."""
    examples, lines = [], open(os.path.join(FIXTURES, "circllhist_examples.txt")).read()
    for label, bins, b64 in re.findall(r"^(.*?) (\{.*\})\n\s+hex .*? b64 (\S+)$", lines, re.M):
        parsed = [(int(v), int(e), int(c)) for v, e, c in
                  re.findall(r"\((-?\d+), (-?\d+)\): \((\d+),", bins)]
        parsed.sort(key=lambda b: bucket_key(b[0], b[1]))
        examples.append((label, b64, [list(b) for b in parsed]))
    assert len(examples) == 4, examples
    return examples


def main():
    server = Server(fail_first=1)
    work = tempfile.TemporaryDirectory()
    try:
        run(server, work.name)
    finally:
        server.stop()
        work.cleanup()
    print("irondb_server selftest: ok")


def run(server, work):
    fixture = {g: open(os.path.join(FIXTURES, "metriclist_%s.bin" % g), "rb").read()
               for g in ("v1_CIML", "v2_CMLS")}

    # Routing, then the first /raw request fails with 503 unread.
    check(server.post("x", path="/other")[0], 404, "other path")
    check(server.post(fixture["v1_CIML"], fb_headers(1))[0], 503, "fail first")
    check(server.new(), [], "nothing recorded on 503")

    # The two FlatBuffer fixtures (protocols.md 7.4).
    fixture_record = {"name": "duration", "tags": {"env": "prod"},
                      "raw_name": "duration|ST[env:prod]", "timestamp_ms": 1700000000123,
                      "type": "n", "value": 1.5, "cumulative": None, "account_id": 1,
                      "check_uuid": "1b988fd7-d1e2-48ec-848e-55709511d43f",
                      "check_name": "test", "target": None, "module": None}
    for name, fmt in (("v1_CIML", "ciml"), ("v2_CMLS", "cmls")):
        check(server.post(fixture[name], fb_headers(1)), ok(1), name)
        check(server.new(), [dict(fixture_record, format=fmt)], name)

    # The TSV samples of protocols.md 6.1, with PUT.
    samples = ("M\t1512691226.137\texample.com`http`c_123_987654::http`"
               "1b988fd7-d1e1-48ec-848e-55709511d43f\tduration\tI\t1\n"
               "H1\t1512691200.000\texample.com`ping_icmp`c_123_45678::ping_icmp`"
               "c50361d8-7565-4f04-8128-3cd2613dbc82\tmaximum\tAAFQ/gAB\n")
    check(server.post(samples, method="PUT"), ok(2), "TSV samples")
    check(server.new(), [
        record("tsv", "duration", 1512691226137, "I", 1),
        record("tsv", "maximum", 1512691200000, "h", [[80, -2, 1]], cumulative=False,
               check_uuid="c50361d8-7565-4f04-8128-3cd2613dbc82",
               check_name="c_123_45678::ping_icmp", module="ping_icmp"),
    ], "TSV samples")

    # The circllhist examples (protocols.md 8.4) as H1 and H2 records.
    examples = circllhist_examples()
    body = "\n".join(tsv("H%d" % (1 + i % 2), "hist.%d" % i, b64)
                     for i, (_, b64, _) in enumerate(examples))
    check(server.post(body), ok(len(examples)), "circllhist examples")
    check(server.new(), [record("tsv", "hist.%d" % i, 1700000000123, "h", bins,
                                cumulative=bool(i % 2))
                         for i, (_, _, bins) in enumerate(examples)], "circllhist examples")
    # The empty histogram.
    check(server.post(tsv("H1", "empty", "AAA=")), ok(1), "empty histogram")
    check(server.new()[0]["value"], [], "empty histogram")

    # Bad histograms: each an error; count-0 and invalid bins dropped with a warning.
    def hist(*bins, header=None, tail=b""):
        out = (len(bins) if header is None else header).to_bytes(2, "big")
        for val, exp, width, count in bins:
            out += bytes([val & 0xff, exp & 0xff, width - 1]) + count.to_bytes(width, "little")
        return base64.b64encode(out + tail).decode()
    bad = [hist((25, 0, 1, 1), (10, 0, 1, 1)),              # out of order
           hist((10, 0, 1, 1), (10, 0, 1, 2)),              # duplicated
           hist((10, 0, 1, 1), (-1, 0, 1, 1)),              # NaN not first
           hist((10, 0, 1, 1), (0, 0, 1, 1)),               # zero after positive
           hist((-10, 0, 1, 1), (-50, -1, 1, 1), (-99, 0, 1, 1)),  # negatives out of order
           hist((10, 0, 9, 1)),                             # t = 8
           hist((10, 0, 1, 1), header=2),                   # truncated
           hist((10, 0, 1, 1), tail=b"\0"),                 # trailing garbage
           "AAFQ/gAB=", "AAFQ/g AB", "AA"]                  # bad base64, too short
    body = "\n".join(tsv("H1", "bad.%d" % i, b) for i, b in enumerate(bad))
    check(server.post(body), ok(len(bad), 0, len(bad)), "bad histograms")
    check(server.new(), [], "bad histograms")
    check([e["severity"] for e in server.new(".errors")], ["error"] * len(bad), "errors")
    good = hist((-1, 0, 1, 1), (-10, 2, 1, 2), (-50, -1, 1, 3), (0, 0, 1, 4), (5, 0, 1, 9),
                (11, -1, 2, 300), (20, 0, 1, 0), (99, 1, 8, 2 ** 64 - 1))
    check(server.post(tsv("H2", "dropping", good)), ok(1), "dropped bins")
    check(server.new()[0]["value"], [[-1, 0, 1], [-10, 2, 2], [-50, -1, 3], [0, 0, 4],
                                     [11, -1, 300], [99, 1, 2 ** 64 - 1]], "dropped bins")
    check([e["severity"] for e in server.new(".errors")], ["warning"] * 2, "warnings")

    # TSV values, nulls and bad records.
    lines = [tsv("M", "v.i", "i\t-2147483648"), tsv("M", "v.I", "I\t4294967295"),
             tsv("M", "v.l", "l\t-9223372036854775808"),
             tsv("M", "v.L", "L\t18446744073709551615"),
             tsv("M", "v.n", "n\t1.500000000000e+00"), tsv("M", "v.s", "s\thello world"),
             tsv("M", "v.null", "n\t[[null]]"), tsv("M", "v.snull", "s\t[[null]]")]
    bad = [tsv("M", "b.i", "i\t2147483648"), tsv("M", "b.I", "I\t-1"),
           tsv("M", "b.n", "n\tnan"), tsv("M", "b.n2", "n\t1e999"), tsv("M", "b.t", "x\t1"),
           tsv("M", "b.ts", "n\t1", timestamp="1700000000.12"),
           tsv("M", "b.ts2", "n\t1", timestamp="1700000000"),
           tsv("M", "b.fields", "n\t1\textra"), "X\tjunk",
           "M\t1700000000.000\thost`http`c_1_2::ping`1b988fd7-d1e1-48ec-848e-55709511d43f\tb\tn\t1",
           "M\t1700000000.000\thost`http`c_1_2::http`1B988FD7-D1E1-48EC-848E-55709511D43F\tb\tn\t1",
           tsv("M", "b.tag|ST[z:1,a:2]", "n\t1"), tsv("M", "b.dup|ST[a:1,a:1]", "n\t1"),
           tsv("M", "b.char|ST[sp ace:1]", "n\t1"), tsv("M", "|ST[a:1]", "n\t1"),
           tsv("M", "b.after|ST[a:1]x", "n\t1"), tsv("M", "b.open|ST[a:1", "n\t1"),
           tsv("M", "b.long|ST[a:%s]" % ("v" * 256), "n\t1"), tsv("M", "x" * 4095, "n\t1")]
    body = ("\n".join(lines[:4] + bad + lines[4:]) + "\n").encode() + b"M\t\xff\n"
    check(server.post(body), ok(len(lines) + len(bad) + 1, len(lines), len(bad) + 1),
          "TSV values")
    got = server.new()
    check([(r["name"], r["type"], r["value"]) for r in got],
          [("v.i", "i", -2 ** 31), ("v.I", "I", 2 ** 32 - 1), ("v.l", "l", -2 ** 63),
           ("v.L", "L", 2 ** 64 - 1), ("v.n", "n", 1.5), ("v.s", "s", "hello world"),
           ("v.null", "n", None), ("v.snull", "s", None)], "TSV values")
    check(len(server.new(".errors")), len(bad) + 1, "TSV errors")

    # Stream tags.
    names = {
        'st.b64|ST[b"fihjYXRlZ29yeSk=":b"PHZhbHVlPg==",env:prod]': {"~(category)": "<value>",
                                                                   "env": "prod"},
        'st.b64b|ST[env:prod,b"fihjYXRlZ29yeSk=":b"PHZhbHVlPg=="]': {"~(category)": "<value>",
                                                                    "env": "prod"},
        "st.multi|MT{x}|ST[a:1]|MT{y:2}|ST[b:2]": {"a": "1", "b": "2"},
        "st.solo|ST[solo,with:a:colon=]": {"solo": None, "with": "a:colon="},
        "st.same|ST[a:1,a:2]": {"a": ["1", "2"]},
        "st.empty|ST[]": {},
    }
    body = "\n".join(tsv("M", n, "n\t1") for n in names)
    check(server.post(body), ok(len(names)), "stream tags")
    got = server.new()
    check([(r["raw_name"], r["tags"]) for r in got], list(names.items()), "stream tags")
    check([r["name"] for r in got], [n.split("|")[0] for n in names], "base names")

    # gzip and the header.
    check(server.post(gzip.compress(tsv("M", "gz", "n\t2").encode()),
                      {"Content-Encoding": "gzip", "X-Snowth-Datapoints": "1"}), ok(1), "gzip")
    check(server.new()[0]["name"], "gz", "gzip")
    check(server.post(b"\x1f\x8bjunk", {"Content-Encoding": "gzip"})[0], 400, "bad gzip")
    check(server.post("x", {"Content-Encoding": "br"})[0], 400, "unknown encoding")

    # reject. refuses the whole request; nothing of it is recorded.
    status, answer = server.post(tsv("M", "ok.one", "n\t1") + "\n" + tsv("M", "reject.me", "n\t1"))
    check(status, 400, "reject.")
    assert "error" in answer, answer
    check(server.new(), [], "reject.")

    # FlatBuffer request-level checks.
    v1 = fixture["v1_CIML"]
    for body, headers, what in ((v1[:100], fb_headers(1), "truncated"),
                                (v1[:4] + b"XXXX" + v1[8:], fb_headers(1), "identifier"),
                                (v1[:4], fb_headers(1), "short"),
                                (b"\xf0\xff\xff\x7fCIML" + bytes(24), fb_headers(1), "root")):
        status, answer = server.post(body, headers)
        check(status, 400, what)
        assert "error" in answer, answer
    check(server.new(), [], "corrupt")
    # A v1 buffer labelled CMLS reads as v2 with a 36-byte check_uuid: a bad record.
    check(server.post(v1[:4] + b"CMLS" + v1[8:], fb_headers(1)), ok(1, 0, 1), "v1 read as v2")
    check(server.new(), [], "v1 read as v2")
    assert "36 bytes" in server.new(".errors")[-1]["error"]
    check(server.post(v1, {"Content-Type": FB_TYPE}), ok(1, 1, 1), "no datapoints header")
    check(server.post(v1, fb_headers(2)), ok(1, 1, 1), "wrong datapoints header")
    check(server.post(v1 + bytes(4), fb_headers(1)), ok(1, 1, 1), "unaligned")
    check(len(server.new()), 3, "recorded despite header problems")
    errors = [e["error"] for e in server.new(".errors")]
    assert "missing" in errors[0] and "Metric entries" in errors[1], errors
    assert errors[2].startswith("unaligned"), errors

    # FlatBuffers built by flatc: histograms, absent values, timestamps.
    def v1_metric(name, value_type, value, ts=0, uuid="1b988fd7-d1e1-48ec-848e-55709511d43f"):
        mv = {"name": name, "value_type": value_type, "value": value}
        if ts:
            mv["timestamp"] = ts
        return {"timestamp": 1700000000000, "check_name": "c_123_987654::http",
                "check_uuid": uuid, "account_id": 123, "value": mv}
    hist_value = {"buckets": [{"val": -1, "exp": 0, "count": 1}, {"val": 0, "exp": 0, "count": 2},
                              {"val": 10, "exp": 0, "count": 3},
                              {"val": 25, "exp": 2, "count": 2 ** 40}], "cumulative": True}
    bins = [[-1, 0, 1], [0, 0, 2], [10, 0, 3], [25, 2, 2 ** 40]]
    doc = {"metrics": [
        v1_metric("fb.h|ST[a:b]", "Histogram", hist_value),
        v1_metric("fb.i", "IntValue", {"value": -7}, ts=1700000000999),
        v1_metric("fb.L", "UlongValue", {"value": 2 ** 64 - 1}),
        v1_metric("fb.s", "StringValue", {"value": "text"}),
        v1_metric("fb.an", "AbsentNumericValue", {}),
        v1_metric("fb.as", "AbsentStringValue", {}),
        v1_metric("fb.ah", "AbsentHistogramValue", {}),
        v1_metric("fb.unsorted", "Histogram", {"buckets": hist_value["buckets"][::-1]}),
        v1_metric("fb.baduuid", "IntValue", {"value": 1}, uuid="not-a-uuid"),
        {"timestamp": 1700000000000, "check_name": "c", "account_id": 1,
         "check_uuid": "1b988fd7-d1e1-48ec-848e-55709511d43f", "value": {"name": "fb.none"}},
    ]}
    body = flatbuffer(work, "v1", doc)
    if len(body) % 8:
        body += bytes(8 - len(body) % 8)  # flatc pads to 4 only
    check(server.post(body, fb_headers(10)), ok(10, 7, 3), "v1 built by flatc")
    common = {"format": "ciml", "tags": {}, "cumulative": None, "account_id": 123,
              "check_uuid": "1b988fd7-d1e1-48ec-848e-55709511d43f",
              "check_name": "c_123_987654::http", "target": None, "module": None,
              "timestamp_ms": 1700000000000}
    expect = [dict(common, name="fb.h", raw_name="fb.h|ST[a:b]", tags={"a": "b"}, type="h",
                   value=bins, cumulative=True),
              dict(common, name="fb.i", raw_name="fb.i", type="i", value=-7,
                   timestamp_ms=1700000000999),
              dict(common, name="fb.L", raw_name="fb.L", type="L", value=2 ** 64 - 1),
              dict(common, name="fb.s", raw_name="fb.s", type="s", value="text"),
              dict(common, name="fb.an", raw_name="fb.an", type="n", value=None),
              dict(common, name="fb.as", raw_name="fb.as", type="s", value=None),
              dict(common, name="fb.ah", raw_name="fb.ah", type="h", value=None,
                   cumulative=False)]
    check(server.new(), expect, "v1 built by flatc")
    check(len(server.new(".errors")), 3, "v1 errors")

    v2_hist = {"buckets": [{"count": b[2], "val": b[0], "exp": b[1]} for b in bins],
               "cumulative": True}
    doc = {"metrics": [
        {"timestamp": 1700000000000, "check_name": "c_123_987654::http",
         "check_uuid": UUID_BYTES, "account_id": 123,
         "value": {"name": "fb2.multi", "samples": [
             {"timestamp": 0, "value_type": "DoubleValue", "value": {"value": 0.25}},
             {"timestamp": 1700000001000, "value_type": "LongValue", "value": {"value": -5}},
             {"value_type": "Histogram", "value": v2_hist},
             {"value_type": "Histogram", "value": {"buckets": v2_hist["buckets"][1:] +
                                                   v2_hist["buckets"][:1]}},
             {"value_type": "UintValue", "value": {"value": 4294967295}},
             {"value_type": "AbsentNumericValue", "value": {}}]}},
        {"timestamp": 1700000000000, "check_name": "x", "check_uuid": UUID_BYTES[:15],
         "account_id": 1, "value": {"name": "fb2.shortuuid", "samples": [
             {"value_type": "IntValue", "value": {"value": 1}}]}},
        {"timestamp": 1700000000000, "check_name": "x", "check_uuid": UUID_BYTES,
         "account_id": 1, "value": {"name": "fb2.nosamples"}},
    ]}
    body = flatbuffer(work, "v2", doc)
    if len(body) % 8:
        body += bytes(8 - len(body) % 8)
    check(server.post(body, fb_headers(3)), ok(8, 5, 3), "v2 built by flatc")
    common = dict(common, format="cmls", check_uuid="1b988fd7-d1e2-48ec-848e-55709511d43f",
                  name="fb2.multi", raw_name="fb2.multi")
    check(server.new(), [dict(common, type="n", value=0.25),
                         dict(common, type="l", value=-5, timestamp_ms=1700000001000),
                         dict(common, type="h", value=bins, cumulative=True),
                         dict(common, type="I", value=4294967295),
                         dict(common, type="n", value=None)], "v2 built by flatc")
    errors = [e["error"] for e in server.new(".errors")]
    assert "out of order" in errors[0] or "NaN" in errors[0], errors
    assert "16" in errors[1] and "samples" in errors[2], errors

    # The request log.
    log = server.lines(".requests")
    check(log[0]["status"], 404, "request log")
    check(log[1]["status"], 503, "request log")
    check(log[2]["format"], "ciml", "request log")


if __name__ == "__main__":
    main()
