#!/usr/bin/env python3
"""Writes the checked-in seed corpus under fuzz/corpus/<target>/.

Run from anywhere with /usr/bin/python3 (pickles come from its `pickle`
module); it rewrites only the files it names, so hand-added seeds stay.

Stream targets (graphite_plaintext, graphite_pickle, kairosdb_telnet) read
their first byte as the split selector (see fuzz/src/lib.rs): every seed
for them is one selector byte followed by the protocol bytes. Seeds for
body targets (kairosdb_rest) are plain bodies.
"""

import datetime
import json
import os
import pickle
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
TS = 1700000000


def write(target, name, data, selector=None):
    if isinstance(data, str):
        data = data.encode()
    if selector is not None:
        data = bytes([selector]) + data
    directory = os.path.join(ROOT, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def stream(target, name, data, selector=0x80):
    write(target, name, data, selector)


def graphite_plaintext():
    t = "graphite_plaintext"
    stream(t, "one_line", f"servers.web01.load 0.42 {TS}\n")
    stream(t, "many_lines", "".join(f"app.req.{i} {i * 1.5} {TS + i}\n" for i in range(20)), 0x33)
    stream(t, "tags", f"disk.used;rack=a1;dc=dc1 9 {TS}\ncpu;host=a;host=b;z=1;a=2 1 {TS}\n", 0x40)
    stream(t, "tags_odd", f"m;=x 1 {TS}\nm;k 1 {TS}\n~m;name=x 1 {TS}\nm;k=v;k2=v=w 1 {TS}\n")
    stream(t, "whitespace", f"a.b\t1e3\t{TS}.9\r\n  a.c   2   {TS}  \n\n\x0b\x1f\n", 0x20)
    stream(t, "now_and_floats", f"a.b 5 -1\na.b 5 -1.5\na.b 1_0 {TS}\na.b 0x10 {TS}\na.b -0 {TS}\n")
    stream(t, "specials", f"a.b nan {TS}\na.b inf {TS}\na.b 1 inf\na.b 1 nan\na.b 1e308 1e20\n")
    stream(t, "field_counts", "a.b\na.b 5\na.b 1 2 3\n" + f"ok 1 {TS}\n", 0xc0)
    stream(t, "bad_utf8", b"bad\xff.utf8 1 1700000000\nok \xc3\xa9 1\nn\xc3\xa9 1 1700000000\n")
    stream(t, "partial_last", f"a.b 1 {TS}\na.b 2 17000", 0xf0)
    stream(t, "long_line", "x" * 300 + f" 1 {TS}\nok 1 {TS}\n" + "y" * 400, 0x50)
    stream(t, "crlf_only", "\r\n\r\r\n", 0x01)
    stream(t, "unicode_name", f"m\u00e9tric.\u4f60\u597d 3.25 {TS}\n")


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def graphite_pickle():
    t = "graphite_pickle"
    tuples = [(f"a.b.{i}", (TS + i, i * 0.5)) for i in range(5)]
    for proto in range(6):
        stream(t, f"proto{proto}_tuples", frame(pickle.dumps(tuples, protocol=proto)), 0x10 + 0x28 * proto)
    lists = [[f"l.{i}", [TS, i]] for i in range(3)]
    stream(t, "proto2_lists", frame(pickle.dumps(lists, protocol=2)))
    stream(t, "proto0_lists", frame(pickle.dumps(lists, protocol=0)))
    stream(t, "proto2_bytes_names", frame(pickle.dumps([(b"py2.name", (TS, 1.5))], protocol=2)))
    stream(t, "proto4_numeric_strings",
           frame(pickle.dumps([("s.a", ("1700000000", "7.5")), ("s.b", (str(TS) + ".5", " 1e3 "))], protocol=4)))
    mixed = [("m.int", (TS, 3)), ("m.big", (TS, 2 ** 80)), ("m.bool", (TS, True)), ("m.neg", (-1, -2.5)),
             ("m.none", (TS, None)), ("m.nan", (TS, float("nan"))), ("", (TS, 1)), ("m.inf", (float("inf"), 1))]
    stream(t, "proto3_mixed_values", frame(pickle.dumps(mixed, protocol=3)), 0x60)
    # The same tuple object twice: memo PUT/GET.
    shared = (TS, 9.0)
    stream(t, "proto2_memo", frame(pickle.dumps([("m.a", shared), ("m.b", shared)], protocol=2)))
    stream(t, "proto5_bytearray", frame(pickle.dumps([(bytearray(b"ba.name"), (TS, 1))], protocol=5)))
    stream(t, "proto2_dict_top", frame(pickle.dumps({"a.b": (TS, 1)}, protocol=2)))
    stream(t, "proto4_set_frozenset", frame(pickle.dumps([{1, 2}, frozenset({3}), ("ok", (TS, 1))], protocol=4)))
    stream(t, "proto2_scalar_top", frame(pickle.dumps(5, protocol=2)))
    stream(t, "proto2_nested_bad_items",
           frame(pickle.dumps([("a", 1), ("a", (1,)), (1, (TS, 1)), ("a", (TS, 1), 3), [[["deep"]]]], protocol=2)))
    # Globals are refused, never executed.
    stream(t, "unsafe_global_p0", frame(pickle.dumps([datetime.date(2024, 1, 2)], protocol=0)))
    stream(t, "unsafe_global_p4", frame(pickle.dumps([datetime.date(2024, 1, 2)], protocol=4)))
    two = frame(pickle.dumps(tuples[:2], protocol=2)) + frame(pickle.dumps(tuples[2:], protocol=0))
    stream(t, "two_frames", two, 0x90)
    stream(t, "truncated_frame", frame(pickle.dumps(tuples, protocol=2))[:-7], 0xe0)
    stream(t, "garbage_frames", frame(b"garbage") + frame(b"") + frame(b"K\x05.") + frame(b"\x80\x02]q\x00(") + b"\x00\x00")
    stream(t, "over_limit", struct.pack(">I", 4097) + b"\x80\x02]q\x00.", 0x02)
    stream(t, "at_limit_header_only", struct.pack(">I", 4096), 0xff)
    # Regression: TUPLE3 across a MARK once panicked the pickle machine.
    stream(t, "regress_tuple_below_mark", frame(b"K\x01K\x02(K\x03\x87t."))


def kairosdb_telnet():
    t = "kairosdb_telnet"
    stream(t, "put", f"put sys.cpu {TS} 42 host=a dc=x\n")
    stream(t, "putm_puts", f"putm sys.cpu {TS}123 1.5 host=a\nputs sys.state {TS}000 up host=a\n", 0x44)
    stream(t, "version", "version\nversion extra words\nput m 1 1 a=b\n", 0x08)
    stream(t, "no_tags_and_ttl", f"put m {TS} 1\nput m {TS} 1 kairos_opt.ttl=60\nput m {TS} 1 kairos_opt.ttl=60 a=b\n")
    stream(t, "bad_ttl", f"put m {TS} 1 kairos_opt.ttl=-1 a=b\nput m {TS} 1 kairos_opt.ttl=x a=b\n")
    stream(t, "quoted_words", f'put "a name" {TS} 1 "k"="v v" k2="x\n"put" m {TS} 1 a=b\n', 0x60)
    stream(t, "tags_split", f"put m {TS} 1 a==b =c d= e=f=g h\nput m {TS} 1 a=1 a=2\n")
    stream(t, "values", f"put m {TS} 0x1p3 a=b\nput m {TS} -0x1.8p-1 a=b\nput m {TS} 1e3 a=b\n"
                        f"put m {TS} 9223372036854775808 a=b\nput m {TS} 1.5d a=b\nput m {TS} NaN a=b\n"
                        f"put m {TS} Infinity a=b\nput m {TS} 07 a=b\n", 0x30)
    stream(t, "timestamps", f"put m 2999999999 1 a=b\nput m 3000000000 1 a=b\nput m -1 1 a=b\n"
                            f"put m 9223372036854775807 1 a=b\nput m 1.5 1 a=b\nputm m -5 1 a=b\n")
    stream(t, "bad_lines", "get m 1 1\nput\nput m\nput m 1\nput  1 1 a=b\n\n   \n", 0xa0)
    stream(t, "latin1", b"put m\xe9 1700000000 1 k\xe9=v\xff\nput m\xc3\xa9 1700000000 1 a=b\n")
    stream(t, "separators", b"put\x01m\x1f1700000000\x201\x00a=b\r\n\tput m 1 1 a=b\r\n", 0x10)
    stream(t, "long_line", "put m 1 1 " + "a=b " * 80 + "\nput ok 1 1 a=b\n", 0x70)
    stream(t, "partial_last", f"put m {TS} 1 a=b\nput m {TS} 2 a", 0xf8)


def kairosdb_rest():
    t = "kairosdb_rest"
    w = lambda name, body: write(t, name, body if isinstance(body, (str, bytes)) else json.dumps(body))
    ms = TS * 1000
    w("single_object", {"name": "m", "timestamp": ms, "value": 1, "tags": {"host": "a"}})
    w("array_datapoints", [{"name": "cpu", "datapoints": [[ms, 1], [ms + 1, 2.5], [ms + 2, "3"]],
                            "tags": {"host": "a", "dc": "x"}},
                           {"name": "mem", "timestamp": ms, "value": 1e20, "tags": {"h": "b"}, "ttl": 60}])
    w("string_type", [{"name": "state", "type": "string", "datapoints": [[ms, "up"], [ms, ""]], "tags": {"a": "b"}}])
    w("typed_long_double", [{"name": "m", "type": "long", "datapoints": [[ms, "12"], [ms, "abc"]], "tags": {"a": "b"}},
                            {"name": "m", "type": "double", "datapoints": [[ms, "1.5"], [ms, "..5"]], "tags": {"a": "b"}}])
    w("nested_arrays", '[{"name":"m","datapoints":[[1,[2,[3]]],[[1],2],[],[1],[1,2,3],null],"tags":{"a":"b"}}]')
    w("validation_errors", [{"name": "", "timestamp": ms, "value": 1, "tags": {}},
                            {"name": "m", "timestamp": ms, "value": 1},
                            {"name": "m", "timestamp": 0, "value": None, "tags": {"": "x", "k": ""}},
                            {"name": "m", "timestamp": ms, "value": 1, "tags": {"a": "b"}, "skip_validate": True}])
    w("gson_conversions", '{"name":12,"timestamp":1,"value":1,"tags":{"n":1.50,"b":false},"unknown":[{}],"name":1e2}')
    w("time_field", '{"name":"m","time":"1700000000000","timestamp":5,"value":"1.5","tags":{"a":"b"}}')
    w("bind_stop", '[{"name":"a","timestamp":1,"value":1,"tags":{"h":"x"}},{"name":"m","timestamp":1.5},{"name":"c"}]')
    w("non_objects", "[1,null,true,\"s\",[2]]")
    w("ttl_edges", '[{"name":"m","ttl":-5,"timestamp":1,"value":1,"tags":{"a":"b"}},'
                   '{"name":"m","ttl":3000000000,"timestamp":1,"value":1,"tags":{"a":"b"}}]')
    w("numbers", '[{"name":"m","datapoints":[[1e5,1],[-0,-0.0],[9223372036854775807,1e999],'
                 '[9223372036854775808,1],[1,12345678901234567890]],"tags":{"a":"b"}}]')
    w("unicode", '{"name":"m\\u00e9\\ud83d\\ude00","timestamp":1,"value":1,"tags":{"k\\n":"v\\"x"}}')
    w("malformed", '[{"name": "metric1", "timestamp": 1234, "value": }]')
    w("truncated", '[{"name":"m","datapoints":[[1,2')
    w("empty_array", "[]")
    w("whitespace_trailing", ' \n\t{"name":"m","timestamp":1,"value":1,"tags":{"a":"b"}} trailing')
    w("duplicate_tag", '{"name":"m","tags":{"a":"1","a":"2"},"timestamp":1,"value":1}')


if __name__ == "__main__":
    graphite_plaintext()
    graphite_pickle()
    kairosdb_telnet()
    kairosdb_rest()
