#!/usr/bin/env python3
"""A test IRONdb `/raw` server: TSV (M, H1, H2) and MetricList FlatBuffers of
both Circonus schema generations, validated as protocols.md sections 6-8
describe, recording what it accepts.

No IRONdb server can be installed here, so this stands in for one. It is
written independently of tsrelay's codecs: the FlatBuffer readers are
generated at start-up by `flatc --python` from the repository's schema files
(schema/circonus_v1 -> package `circonus`, schema/circonus_v2 -> `noit`), and
the circllhist decoder and stream-tag parser below follow the document.
Run it with Debian's /usr/bin/python3 (python3-flatbuffers, flatc on PATH):

    irondb_server.py PORT RECORD_FILE [FAIL_FIRST_N]

PUT or POST /raw only (any other path: 404). Every accepted data point is
appended to RECORD_FILE as one JSON line:

    {"format": "tsv"|"ciml"|"cmls", "name", "tags": {cat: val}, "raw_name",
     "timestamp_ms", "type": "i"|"I"|"l"|"L"|"n"|"s"|"h", "value",
     "cumulative", "account_id", "check_uuid", "check_name", "target",
     "module"}

`name` is the name without stream tags and `tags` its `|ST[...]` tags,
decoded (a category-only tag has the value null; a category given with
several values maps to the list of them). `value` is a number, a string,
null (`[[null]]` or an Absent*Value), or for histograms (type "h") a list of
[val, exp, count] bins; `cumulative` is true/false for histograms, null
otherwise. TSV records carry target and module from the UUID field; for
FlatBuffers they are null.

Problems go, one JSON line each, to RECORD_FILE.errors: {"severity":
"error"|"warning", "error": text, "format"?, "raw_name"?, "status"?}. A bad
record is an error and is not recorded; so are a missing or wrong
X-Snowth-Datapoints header on a FlatBuffer body and a FlatBuffer body whose
length is not a multiple of 8 ("unaligned"). Bins that the C deserializer
would skip (count 0, invalid bucket) are dropped with a warning.
RECORD_FILE.requests gets one JSON line per request (method, path, status,
headers of interest, body length, counts).

Answers: the first FAIL_FIRST_N requests to /raw get 503 without being
parsed (to test retries); a body that cannot be parsed at all (bad gzip,
corrupt FlatBuffer, unknown identifier) gets 400 {"error": ...}; a name
starting with `reject.` makes the whole request 400 with nothing recorded
(so a test can see how a client handles a non-retryable 4xx); otherwise
200 {"records": N, "updated": N, "misdirected": 0, "errors": N} where
records = records seen, updated = records accepted and errors = bad records
plus request-level problems.
"""
import atexit
import base64
import gzip
import importlib
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, RECORD = int(sys.argv[1]), sys.argv[2]
FAIL_FIRST = int(sys.argv[3]) if len(sys.argv) > 3 else 0
ERRORS, REQUESTS = RECORD + ".errors", RECORD + ".requests"
FLATBUFFER_TYPE = "application/x-circonus-metric-list-flatbuffer"
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.normpath(os.path.join(HERE, "..", "..", "schema"))
lock = threading.Lock()
requests_seen = [0]


# ---------------------------------------------------------------------------
# FlatBuffer readers generated from our .fbs files

def generate_readers():
    """Runs flatc --python on both schema generations into a temp dir (next
    to RECORD_FILE, so a test's temp dir takes it away even after SIGKILL)
    and puts it on sys.path. Each .fbs is compiled on its own (not --gen-all:
    flatc 2.0.8 then leaves out the cross-file imports)."""
    out = tempfile.mkdtemp(prefix="irondb_fb_", dir=os.path.dirname(os.path.abspath(RECORD)))
    atexit.register(shutil.rmtree, out, True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for generation in ("circonus_v1", "circonus_v2"):
        files = [os.path.join(SCHEMA, generation, name)
                 for name in ("metric_common.fbs", "metric.fbs", "metric_list.fbs")]
        subprocess.run(["flatc", "-o", out, "--python"] + files, check=True)
    sys.path.insert(0, out)


generate_readers()
import flatbuffers  # noqa: E402  (python3-flatbuffers, used by the generated code)

UNION = ["NONE", "IntValue", "UintValue", "LongValue", "UlongValue", "DoubleValue",
         "StringValue", "Histogram", "AbsentNumericValue", "AbsentStringValue",
         "AbsentHistogramValue"]
# union member -> (type letter, whether it carries a value)
UNION_TYPE = {"IntValue": "i", "UintValue": "I", "LongValue": "l", "UlongValue": "L",
              "DoubleValue": "n", "StringValue": "s", "Histogram": "h",
              "AbsentNumericValue": "n", "AbsentStringValue": "s",
              "AbsentHistogramValue": "h"}


def generated(namespace, name):
    return getattr(importlib.import_module("%s.%s" % (namespace, name)), name)


V1 = {name: generated("circonus", name) for name in
      UNION[1:] + ["HistogramBucket", "Metric", "MetricList", "MetricValue"]}
V2 = {name: generated("noit", name) for name in
      UNION[1:] + ["HistogramBucket", "Metric", "MetricList", "MetricValue", "MetricSample"]}
# Check the generated union discriminants are the ones protocols.md gives.
for namespace in ("circonus", "noit"):
    union = generated(namespace, "MetricValueUnion")
    assert [getattr(union, name) for name in UNION] == list(range(len(UNION))), namespace


class Corrupt(Exception):
    """The body cannot be parsed at all: the whole request is refused."""


class BadRecord(Exception):
    """One record is invalid: counted in errors, not recorded."""


# A small verifier: the Python flatbuffers runtime does no bounds checks
# (strings are sliced, so a truncated one reads short), so every table,
# vector and string is checked against the buffer before it is read.

def u32(buf, pos):
    if pos < 0 or pos + 4 > len(buf):
        raise Corrupt("offset %d out of the buffer" % pos)
    return struct.unpack_from("<I", buf, pos)[0]


def check_table(obj):
    """Checks the table under a generated object; returns the object."""
    buf, pos = obj._tab.Bytes, obj._tab.Pos
    if pos % 4 or pos + 4 > len(buf):
        raise Corrupt("table at %d is misaligned or out of the buffer" % pos)
    vtable = pos - struct.unpack_from("<i", buf, pos)[0]
    if vtable < 0 or vtable % 2 or vtable + 4 > len(buf):
        raise Corrupt("vtable of the table at %d is out of the buffer" % pos)
    vsize, tsize = struct.unpack_from("<HH", buf, vtable)
    if vsize < 4 or vsize % 2 or vtable + vsize > len(buf) or tsize < 4 \
            or pos + tsize > len(buf):
        raise Corrupt("table at %d has a bad vtable" % pos)
    for slot in range(4, vsize, 2):
        field = struct.unpack_from("<H", buf, vtable + slot)[0]
        if field and field + 1 > tsize:
            raise Corrupt("field %d of the table at %d is outside it" % (slot, pos))
    return obj


def check_string_at(buf, pos):
    """The string referenced by the uoffset at pos: its bytes."""
    start = pos + u32(buf, pos)
    length = u32(buf, start)
    end = start + 4 + length
    if end + 1 > len(buf) or buf[end] != 0:
        raise Corrupt("string at %d is truncated or not NUL-terminated" % start)
    return bytes(buf[start + 4:end])


def string_field(obj, vt_offset):
    """A string field's bytes, or None when absent."""
    o = obj._tab.Offset(vt_offset)
    return check_string_at(obj._tab.Bytes, obj._tab.Pos + o) if o else None


def check_vector(obj, vt_offset, element_size, align=4):
    """Checks a vector field; returns its length (0 when absent)."""
    o = obj._tab.Offset(vt_offset)
    if not o:
        return 0
    buf = obj._tab.Bytes
    start = obj._tab.Pos + o
    start += u32(buf, start)
    length = u32(buf, start)
    if start % 4 or (start + 4) % align or start + 4 + length * element_size > len(buf):
        raise Corrupt("vector at %d is misaligned or out of the buffer" % start)
    return length


def union_value(holder, type_letter_of, classes):
    """(type letter, value object or None, member name) of a union field read
    with the holder's generated ValueType()/Value()."""
    tag = holder.ValueType()
    if tag == 0 or tag >= len(UNION):
        raise BadRecord("value_type %d is not a MetricValueUnion member" % tag)
    table = holder.Value()
    name = UNION[tag]
    if table is None:
        raise BadRecord("value_type %s without a value table" % name)
    value = classes[name]()
    value.Init(table.Bytes, table.Pos)
    return type_letter_of[name], check_table(value), name


def decode_scalar(member, value):
    if member == "StringValue":
        raw = string_field(value, 4)
        if raw is None:
            raise BadRecord("StringValue without a value")
        return utf8(raw, "string value")
    if member == "DoubleValue":
        v = value.Value()
        if not math.isfinite(v):
            raise BadRecord("DoubleValue %r is not finite" % v)
        return v
    if member.startswith("Absent"):
        return None
    return value.Value()


def utf8(raw, what):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("%s is not UTF-8" % what)


def format_uuid(raw):
    h = raw.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def histogram_from_buckets(buckets, warnings):
    """Applies the deserializer's rules to (val, exp, count) buckets."""
    kept = []
    for val, exp, count in buckets:
        if count == 0:
            warnings.append("histogram bin (%d,%d) with count 0 ignored" % (val, exp))
        elif not bucket_valid(val, exp):
            warnings.append("invalid histogram bucket (%d,%d) dropped" % (val, exp))
        else:
            kept.append([val, exp, count])
    check_bin_order(kept)
    return kept


def read_metric_list(body, identifier):
    """-> (points, number of Metric entries). A point is (raw_name,
    stream_tags, timestamp_ms, type, value, cumulative, account_id,
    check_uuid, check_name, warnings), or a BadRecord. Raises Corrupt for an
    unreadable buffer."""
    buf = bytearray(body)
    v1 = identifier == b"CIML"
    classes = V1 if v1 else V2
    root = classes["MetricList"].GetRootAs(buf, 0)
    check_table(root)
    points, metric_count = [], check_vector(root, 4, 4)
    for i in range(metric_count):
        metric = check_table(root.Metrics(i))
        try:
            check_name = string_field(metric, 6)
            check_name = utf8(check_name, "check_name") if check_name is not None else None
            if v1:
                uuid = string_field(metric, 8)
                uuid = utf8(uuid, "check_uuid") if uuid is not None else None
                if uuid is None or not UUID_RE.match(uuid):
                    raise BadRecord("check_uuid %r is not a lowercase text UUID" % uuid)
            else:
                n = check_vector(metric, 8, 1)
                if n != 16:
                    raise BadRecord("check_uuid has %d bytes, not 16" % n)
                uuid = format_uuid(bytes(metric.CheckUuid(j) for j in range(16)))
            common = (metric.AccountId(), uuid, check_name)
            value = metric.Value()
            if value is None:
                raise BadRecord("Metric without a value")
            check_table(value)
            raw = string_field(value, 4)
            if raw is None:
                raise BadRecord("MetricValue without a name")
            name = utf8(raw, "name")
            extra_tags = []
            for j in range(check_vector(value, 14 if v1 else 6, 4)):
                pos = value._tab.Vector(value._tab.Offset(14 if v1 else 6)) + 4 * j
                extra_tags.append(utf8(check_string_at(buf, pos), "stream_tags"))
            if v1:
                samples = [value]
            else:
                samples = [check_table(value.Samples(j))
                           for j in range(check_vector(value, 8, 4))]
                if not samples:
                    raise BadRecord("MetricValue %r without samples" % name)
        except BadRecord as e:
            points.append(e)
            continue
        for sample in samples:
            try:
                timestamp = sample.Timestamp() or metric.Timestamp()
                if timestamp == 0:
                    raise BadRecord("%r has no timestamp" % name)
                letter, val, member = union_value(sample, UNION_TYPE, classes)
                warnings, cumulative = [], None
                if member == "Histogram":
                    cumulative = bool(val.Cumulative())
                    n = check_vector(val, 4, 4 if v1 else 16, 4 if v1 else 8)
                    buckets = []
                    for j in range(n):
                        bucket = val.Buckets(j)
                        if v1:
                            check_table(bucket)
                        buckets.append((bucket.Val(), bucket.Exp(), bucket.Count()))
                    decoded = histogram_from_buckets(buckets, warnings)
                elif member == "AbsentHistogramValue":
                    decoded, cumulative = None, False
                else:
                    decoded = decode_scalar(member, val)
                points.append((name, extra_tags, timestamp, letter, decoded, cumulative)
                              + common + (warnings,))
            except BadRecord as e:
                points.append(BadRecord("%s: %s" % (name, e)))
    return points, metric_count


# ---------------------------------------------------------------------------
# circllhist (protocols.md section 8)

def bucket_valid(val, exp):
    a = abs(val)
    return a == 0 or 10 <= a <= 99 or (val == -1 and exp == 0)


def bucket_key(val, exp):
    """Position on the real line, NaN first."""
    if val == -1 and exp == 0:
        return (0,)
    if val == 0:
        return (2,)
    if val < 0:
        return (1, -exp, val)
    return (3, exp, val)


def check_bin_order(bins):
    keys = [bucket_key(val, exp) for val, exp, _ in bins]
    for a, b, bin_a, bin_b in zip(keys, keys[1:], bins, bins[1:]):
        if a == b:
            raise BadRecord("histogram bin (%d,%d) is duplicated" % tuple(bin_a[:2]))
        if a > b:
            raise BadRecord("histogram bins (%d,%d) then (%d,%d) are out of order"
                            % (bin_a[0], bin_a[1], bin_b[0], bin_b[1]))


BASE64_RE = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")


def strict_base64(text, what):
    """Standard alphabet, `=` padding, nothing else (Python alone lets
    excess padding through)."""
    if not BASE64_RE.match(text):
        raise BadRecord("%s %r is not valid base64" % (what, text[:80]))
    return base64.b64decode(text, validate=True)


def decode_circllhist(text, warnings):
    """Base64 hist_serialize() output -> [[val, exp, count], ...]."""
    data = strict_base64(text, "histogram")
    if len(data) < 2:
        raise BadRecord("histogram shorter than its 2-byte header")
    (n,) = struct.unpack_from(">H", data, 0)
    pos, buckets = 2, []
    for _ in range(n):
        if pos + 3 > len(data):
            raise BadRecord("histogram truncated in bin %d" % len(buckets))
        val, exp, t = struct.unpack_from("<bbB", data, pos)
        if t > 7:
            raise BadRecord("histogram bin count width %d > 7" % t)
        if pos + 3 + t + 1 > len(data):
            raise BadRecord("histogram truncated in the count of bin %d" % len(buckets))
        count = int.from_bytes(data[pos + 3:pos + 4 + t], "little")
        pos += 4 + t
        buckets.append((val, exp, count))
    if pos != len(data):
        raise BadRecord("histogram has %d bytes after its %d bins" % (len(data) - pos, n))
    return histogram_from_buckets(buckets, warnings)


# ---------------------------------------------------------------------------
# Names and stream tags (protocols.md section 6.4)

CATEGORY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                     "`+!@#$%^&\"'/?._-")
VALUE_CHARS = CATEGORY_CHARS | {":", "="}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def tag_part(text, allowed, what):
    if text.startswith('b"') and text.endswith('"') and len(text) >= 3:
        raw = strict_base64(text[2:-1], "tag " + what)
        return raw.decode("utf-8", "backslashreplace")
    bad = [c for c in text if c not in allowed]
    if bad:
        raise BadRecord("tag %s %r has characters that need b\"base64\": %r"
                        % (what, text, "".join(bad)))
    return text


def parse_tag(text):
    """`category[:value]` -> (category, value or None, as sent, as sent)."""
    if text.startswith('b"'):
        end = text.find('"', 2)
        if end < 0:
            raise BadRecord("unterminated b\"...\" in tag %r" % text)
        category, rest = text[:end + 1], text[end + 1:]
    else:
        category, colon, value = text.partition(":")
        rest = colon + value
    if rest and not rest.startswith(":"):
        raise BadRecord("tag %r: text after the category" % text)
    value = rest[1:] if rest else None
    if len(category) + len(value or "") > 256:
        raise BadRecord("tag %r is longer than 256 characters" % text[:60])
    if category == "":
        raise BadRecord("tag %r has an empty category" % text)
    return (tag_part(category, CATEGORY_CHARS, "category"),
            None if value is None else tag_part(value, VALUE_CHARS, "value"),
            category, value)


def parse_name(raw, extra_tags=()):
    """raw name -> (base name, tags dict). Tags must come sorted by category
    then value and without duplicates, as IRONdb's canonical form has them;
    several |ST[...] sections are merged, |MT{...} ones checked and dropped."""
    if "\0" in raw:
        raise BadRecord("name contains NUL")
    if len(raw) >= 4095:
        raise BadRecord("name is %d characters, not < 4095" % len(raw))
    starts = [i for i in (raw.find("|ST["), raw.find("|MT{")) if i >= 0]
    cut = min(starts) if starts else len(raw)
    base, rest, tags = raw[:cut], raw[cut:], []
    if base == "":
        raise BadRecord("empty metric name in %r" % raw)
    while rest:
        opener, closer = rest[:4], {"|ST[": "]", "|MT{": "}"}.get(rest[:4])
        if closer is None:
            raise BadRecord("text %r after the tags of %r" % (rest, raw))
        end = rest.find(closer, 4)
        if end < 0:
            raise BadRecord("unterminated %s in %r" % (opener, raw))
        body, rest = rest[4:end], rest[end + 1:]
        if opener == "|ST[" and body != "":
            tags.extend(parse_tag(t) for t in body.split(","))
        elif opener == "|MT{" and body != "":
            for t in body.split(","):
                parse_tag(t)  # measurement tags: checked, then dropped
    # Sorted by category then value, without duplicates. Whether IRONdb
    # compares the decoded or the sent (b"base64") forms is not documented,
    # so either order is accepted; duplicates are judged decoded.
    decoded = [(c, "" if v is None else v, v is not None) for c, v, _, _ in tags]
    sent = [(c, "" if v is None else v, v is not None) for _, _, c, v in tags]
    if len(set(decoded)) != len(decoded):
        raise BadRecord("stream tags of %r are duplicated" % raw)
    if decoded != sorted(decoded) and sent != sorted(sent):
        raise BadRecord("stream tags of %r are not sorted" % raw)
    for text in extra_tags:
        tags.append(parse_tag(text))
    out = {}
    for category, value, _, _ in tags:
        if category not in out:
            out[category] = value
        elif isinstance(out[category], list):
            out[category].append(value)
        else:
            out[category] = [out[category], value]
    return base, out


# ---------------------------------------------------------------------------
# TSV (protocols.md section 6.1)

TIMESTAMP_RE = re.compile(r"^\d+\.\d{3}$")
INT_RE = re.compile(r"^-?\d+$")
UINT_RE = re.compile(r"^\d+$")
FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
INT_RANGE = {"i": (-2 ** 31, 2 ** 31 - 1), "I": (0, 2 ** 32 - 1),
             "l": (-2 ** 63, 2 ** 63 - 1), "L": (0, 2 ** 64 - 1)}
CHECK_NAME_RE = re.compile(r"^c_(\d+)_(\d+)::(.+)$")


def tsv_value(kind, text):
    if text == "[[null]]":
        return None
    if kind == "s":
        return text
    if kind == "n":
        if not FLOAT_RE.match(text):
            raise BadRecord("value %r is not a decimal double" % text)
        v = float(text)
        if not math.isfinite(v):
            raise BadRecord("value %r is not finite" % text)
        return v
    low, high = INT_RANGE[kind]
    if not (INT_RE if low < 0 else UINT_RE).match(text) or not low <= int(text) <= high:
        raise BadRecord("value %r is not a type %s integer" % (text, kind))
    return int(text)


def read_tsv_line(line):
    """One TSV record -> point tuple (as read_metric_list's)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("record is not UTF-8")
    fields = text.split("\t")
    kind = fields[0]
    if kind == "M" and len(fields) != 6 or kind in ("H1", "H2") and len(fields) != 5:
        raise BadRecord("%s record with %d fields" % (kind, len(fields)))
    if kind not in ("M", "H1", "H2"):
        raise BadRecord("unknown record type %r" % kind[:20])
    timestamp, uuid_field, name = fields[1], fields[2], fields[3]
    if not TIMESTAMP_RE.match(timestamp):
        raise BadRecord("timestamp %r is not SECONDS.mmm" % timestamp)
    timestamp_ms = int(timestamp.replace(".", ""))
    parts = uuid_field.split("`")
    if len(parts) != 4:
        raise BadRecord("UUID field %r has not 4 backtick-separated parts" % uuid_field)
    target, module, check_name, uuid = parts
    circonus = CHECK_NAME_RE.match(check_name)
    if not target or not module or not circonus or circonus.group(3) != module:
        raise BadRecord("UUID field %r is not TARGET`MODULE`c_ACCOUNT_BUNDLE::MODULE`uuid"
                        % uuid_field)
    if not UUID_RE.match(uuid):
        raise BadRecord("check uuid %r is not a lowercase UUID" % uuid)
    warnings, cumulative = [], None
    if kind == "M":
        letter = fields[4]
        if letter not in ("i", "I", "l", "L", "n", "s"):
            raise BadRecord("unknown metric type %r" % letter)
        value = tsv_value(letter, fields[5])
    else:
        letter, cumulative = "h", kind == "H2"
        value = decode_circllhist(fields[4], warnings)
    return (name, [], timestamp_ms, letter, value, cumulative, int(circonus.group(1)),
            uuid, check_name, warnings, target, module)


# ---------------------------------------------------------------------------
# Requests

def to_record(fmt, point):
    name, extra_tags, timestamp, letter, value, cumulative, account, uuid, check_name, \
        warnings = point[:10]
    target, module = point[10:] if len(point) > 10 else (None, None)
    base, tags = parse_name(name, extra_tags)
    return {"format": fmt, "name": base, "tags": tags, "raw_name": name,
            "timestamp_ms": timestamp, "type": letter, "value": value,
            "cumulative": cumulative, "account_id": account, "check_uuid": uuid,
            "check_name": check_name, "target": target, "module": module}, warnings


def process(body, headers):
    """-> (status, answer dict, records, problems, format)."""
    problems = []
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    datapoints = headers.get("X-Snowth-Datapoints")
    if content_type == FLATBUFFER_TYPE:
        identifier = body[4:8]
        if len(body) < 8 or identifier not in (b"CIML", b"CMLS"):
            raise Corrupt("file identifier %r is neither CIML nor CMLS" % identifier)
        fmt = identifier.decode().lower()
        if len(body) % 8:
            problems.append("unaligned: body of %d bytes is not a multiple of 8" % len(body))
        try:
            points, metric_count = read_metric_list(body, identifier)
        except Corrupt:
            raise
        except Exception as e:  # the runtime reading past the buffer, etc.
            raise Corrupt("corrupt FlatBuffer: %s: %s" % (type(e).__name__, e))
        if datapoints is None:
            problems.append("X-Snowth-Datapoints header missing")
        elif datapoints.strip() != str(metric_count):
            problems.append("X-Snowth-Datapoints %r but %d Metric entries"
                            % (datapoints, metric_count))
    else:
        fmt, points = "tsv", []
        for line in body.split(b"\n"):
            if line == b"":
                continue
            try:
                points.append(read_tsv_line(line))
            except BadRecord as e:
                points.append(BadRecord("%s (record %r)" % (e, line[:200])))
        if datapoints is not None and datapoints.strip() != str(len(points)):
            problems.append("X-Snowth-Datapoints %r but %d records" % (datapoints, len(points)))
    records, bad = [], []
    for point in points:
        if isinstance(point, BadRecord):
            bad.append({"severity": "error", "error": str(point), "format": fmt})
            continue
        try:
            record, warnings = to_record(fmt, point)
        except BadRecord as e:
            bad.append({"severity": "error", "error": str(e), "format": fmt,
                        "raw_name": point[0]})
            continue
        records.append(record)
        problems_of_record = [{"severity": "warning", "error": w, "format": fmt,
                               "raw_name": point[0]} for w in warnings]
        bad.extend(problems_of_record)
    rejected = [r["raw_name"] for r in records if r["raw_name"].startswith("reject.")]
    if rejected:
        return 400, {"error": "refused by this test server: %s" % rejected[0]}, [], [], fmt
    errors = [p for p in bad if p["severity"] == "error"]
    bad.extend({"severity": "error", "error": p, "format": fmt} for p in problems)
    answer = {"records": len(points), "updated": len(records), "misdirected": 0,
              "errors": len(errors) + len(problems)}
    return 200, answer, records, bad, fmt


def append_lines(path, items):
    if items:
        with open(path, "a") as out:
            for item in items:
                out.write(json.dumps(item) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self):
        self.answer(404, {"error": "not found"})

    def do_PUT(self):
        self.handle_raw()

    def do_POST(self):
        self.handle_raw()

    def handle_raw(self):
        body = self.read_body()
        log = {"method": self.command, "path": self.path, "length": len(body),
               "content_type": self.headers.get("Content-Type"),
               "content_encoding": self.headers.get("Content-Encoding"),
               "datapoints": self.headers.get("X-Snowth-Datapoints")}
        if self.path.split("?")[0] != "/raw":
            return self.finish_request(404, {"error": "not found"}, log)
        with lock:
            requests_seen[0] += 1
            failing = requests_seen[0] <= FAIL_FIRST
        if failing:
            return self.finish_request(503, {"error": "unavailable"}, log)
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding not in ("", "identity"):
                raise Corrupt("unsupported Content-Encoding %r" % encoding)
            status, answer, records, problems, fmt = process(body, self.headers)
        except (Corrupt, OSError, EOFError, zlib.error) as e:
            status, answer, records, problems, fmt = 400, {"error": str(e)}, [], [], None
        if status == 400:
            problems = [{"severity": "error", "error": answer["error"], "status": 400}]
        log.update(format=fmt, answer=answer)
        with lock:
            append_lines(RECORD, records)
            append_lines(ERRORS, problems)
        self.finish_request(status, answer, log)

    def finish_request(self, status, answer, log):
        log["status"] = status
        with lock:
            append_lines(REQUESTS, [log])
        self.answer(status, answer)


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
