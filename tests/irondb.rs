//! IRONdb in and out: TSV and FlatBuffer bodies posted with Python
//! `requests` into Graphite (a real carbon-cache, and a plaintext sink),
//! and Graphite plaintext into the test IRONdb `/raw` server, which reads
//! both formats with independent code (flatc-generated Python, a circllhist
//! decoder written from the spec).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use crate::util::carbon::Carbon;
use crate::util::irondb::IrondbServer;
use crate::util::{free_port, now_secs, python, require_peer, send_tcp, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(60);
const CHECK: &str = "check: {account_id: 7, check_uuid: 1B988FD7-D1E1-48EC-848E-55709511D43F, \
                     check_name: relay, target: 127.0.0.1, module: graphite}";
const UUID_FIELD: &str = "example.com`http`c_123_987654::http`1b988fd7-d1e1-48ec-848e-55709511d43f";

/// Posts `body` (a Python bytes expression) to `url` and prints status and answer.
fn post(url: &str, body_expr: &str, content_type: Option<&str>, method: &str) -> (u16, Json) {
    let headers = content_type.map_or("{}".to_owned(), |ct| format!("{{'Content-Type': '{ct}'}}"));
    let out = python(
        &format!(
            "import requests, sys\n\
             body = {body_expr}\n\
             r = requests.request('{method}', sys.argv[1], data=body, headers={headers})\n\
             print(r.status_code)\nprint(r.text)\n"
        ),
        &[url],
    );
    let (status, body) = out.split_once('\n').expect("status line");
    (
        status.trim().parse().expect("status"),
        serde_json::from_str(body.trim()).expect("JSON answer"),
    )
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn tsv_records_reach_carbon_cache_as_plaintext_and_pickle() {
    if !require_peer("carbon-cache") || !require_peer("python3") {
        return;
    }
    let carbon = Carbon::cache();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: http, protocol: http, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: line, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}}}}\n\
         \x20 - {{name: pickle, protocol: graphite_pickle, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}}}}\n\
         routes:\n  - {{match: {{prefix: line.}}, to: [line]}}\n  - {{match: {{prefix: pickle.}}, to: [pickle]}}\n",
        carbon.line_port, carbon.pickle_port
    ));
    let t = now_secs() - 30;
    let mut lines = Vec::new();
    for prefix in ["line", "pickle"] {
        lines.push(format!("M\t{t}.250\t{UUID_FIELD}\t{prefix}.int\ti\t-42"));
        lines.push(format!(
            "M\t{t}.000\t{UUID_FIELD}\t{prefix}.uint\tI\t4000000000"
        ));
        lines.push(format!("M\t{}.000\t{UUID_FIELD}\t{prefix}.double|ST[env:prod,b\"dW5pdA==\":ms]\tn\t1.500000000000e+00", t + 1));
        // Two samples: 1 and 2.5 (circllhist: (10,0)x1, (25,0)x1).
        lines.push(format!(
            "H1\t{t}.000\t{UUID_FIELD}\t{prefix}.latency\tAAIKAAABGQAAAQ=="
        ));
        lines.push(format!("M\t{t}.5\t{UUID_FIELD}\t{prefix}.bad_ts\tn\t1"));
    }
    let body = lines.join("\n");
    let (status, answer) = post(
        &format!("http://127.0.0.1:{port}/raw"),
        &format!("{body:?}.encode()"),
        None,
        "PUT",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["records"], 10);
    assert_eq!(answer["errors"], 2);
    assert_eq!(answer["misdirected"], 0);
    for prefix in ["line", "pickle"] {
        let names = [
            format!("{prefix}.int"),
            format!("{prefix}.uint"),
            format!("{prefix}.double;env=prod;unit=ms"),
            format!("{prefix}.latency.count"),
            format!("{prefix}.latency.sum"),
            format!("{prefix}.latency.min"),
            format!("{prefix}.latency.max"),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let stored = || carbon.stored(&refs);
        assert!(
            wait_until(WAIT, || stored().values().filter(|v| !v.is_empty()).count()
                == names.len()),
            "{:?}\n{}\n{}",
            stored(),
            relay.stderr(),
            carbon.console()
        );
        let stored = stored();
        assert_eq!(stored[&names[0]], vec![(t, -42.0)]);
        assert_eq!(stored[&names[1]], vec![(t, 4_000_000_000.0)]);
        assert_eq!(stored[&names[2]], vec![(t + 1, 1.5)]);
        assert_eq!(stored[&names[3]], vec![(t, 2.0)]);
        // Bucket midpoints: 1.05 + 2.55.
        assert!((stored[&names[4]][0].1 - 3.6).abs() < 1e-9, "{stored:?}");
        assert_eq!(stored[&names[5]], vec![(t, 1.0)]);
        assert_eq!(stored[&names[6]], vec![(t, 2.6)]);
    }
    assert_eq!(
        relay.metric(
            "tsrelay_listener_points_rejected_total{listener=\"http\",reason=\"bad_timestamp\"}"
        ),
        2.0
    );
}

#[test]
fn flatbuffer_bodies_of_both_generations_reach_graphite() {
    if !require_peer("python3") {
        return;
    }
    let sink = Sink::start();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: http, protocol: http, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}}}}\n\
         routes:\n  - {{default: true, to: [sink]}}\n",
        sink.port
    ));
    let url = format!("http://127.0.0.1:{port}/raw");
    let content_type = Some("application/x-circonus-metric-list-flatbuffer");
    for file in ["metriclist_v1_CIML.bin", "metriclist_v2_CMLS.bin"] {
        let (status, answer) = post(
            &url,
            &format!("open({:?}, 'rb').read()", fixture(file)),
            content_type,
            "POST",
        );
        assert_eq!(status, 200, "{file}: {answer}");
        assert_eq!(answer["records"], 1, "{file}: {answer}");
        assert_eq!(answer["errors"], 0, "{file}: {answer}");
    }
    assert!(
        wait_until(WAIT, || sink.line_count() >= 2),
        "{:?}\n{}",
        sink.lines(),
        relay.stderr()
    );
    assert_eq!(
        sink.lines(),
        vec![
            "duration;env=prod 1.5 1700000000".to_owned(),
            "duration;env=prod 1.5 1700000000".to_owned()
        ]
    );
    // A corrupt buffer is a 400 with a JSON error, and the relay goes on.
    let (status, answer) = post(
        &url,
        &format!(
            "open({:?}, 'rb').read()[:60]",
            fixture("metriclist_v1_CIML.bin")
        ),
        content_type,
        "POST",
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("FlatBuffer")),
        "{answer}"
    );
    assert_eq!(
        relay.metric(
            "tsrelay_listener_points_rejected_total{listener=\"http\",reason=\"bad_flatbuffer\"}"
        ),
        1.0
    );
}

fn by_name(records: &[Json]) -> BTreeMap<String, Json> {
    records
        .iter()
        .map(|r| (r["name"].as_str().unwrap_or_default().to_owned(), r.clone()))
        .collect()
}

#[test]
fn graphite_plaintext_reaches_irondb_in_every_format() {
    if !IrondbServer::available() {
        return;
    }
    let servers = [
        IrondbServer::start(0),
        IrondbServer::start(0),
        IrondbServer::start(0),
    ];
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n\
         \x20 - {{name: fb1, protocol: irondb_flatbuffer, url: \"{}\", batch: {{max_delay: 20ms}}, {CHECK}}}\n\
         \x20 - {{name: fb2, protocol: irondb_flatbuffer, flatbuffer_schema: cmls, url: \"{}\", batch: {{max_delay: 20ms}}, {CHECK}}}\n\
         \x20 - {{name: tsv, protocol: irondb_raw, method: put, url: \"{}\", batch: {{max_delay: 20ms}}, {CHECK}}}\n\
         routes:\n  - {{default: true, to: [fb1, fb2, tsv]}}\n",
        servers[0].url(),
        servers[1].url(),
        servers[2].url()
    ));
    let t = now_secs();
    let n = 300;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "app.requests.n{i};dc=east;host=web-1 {i}.25 {t}\n"
        ));
    }
    text.push_str(&format!("app.weird;k=x|y {} {t}\n", 7));
    send_tcp(port, text.as_bytes());
    for (server, format) in servers.iter().zip(["ciml", "cmls", "tsv"]) {
        let records = server.wait_for(n + 1, WAIT);
        assert_eq!(
            records.len(),
            n + 1,
            "{format}: {:?}\n{}\n{}",
            server.errors(),
            relay.stderr(),
            server.stderr()
        );
        assert!(
            server.errors().is_empty(),
            "{format}: {:?}",
            server.errors()
        );
        let records = by_name(&records);
        let first = &records["app.requests.n1"];
        assert_eq!(first["format"], format);
        assert_eq!(first["tags"]["dc"], "east");
        assert_eq!(first["tags"]["host"], "web-1");
        assert_eq!(first["value"], 1.25);
        assert_eq!(first["timestamp_ms"], t * 1000);
        assert_eq!(first["account_id"], 7);
        assert_eq!(first["check_uuid"], "1b988fd7-d1e1-48ec-848e-55709511d43f");
        assert_eq!(records["app.weird"]["tags"]["k"], "x|y");
        let requests = server.requests();
        assert!(!requests.is_empty());
    }
    let tsv = by_name(&servers[2].records());
    assert_eq!(tsv["app.requests.n1"]["check_name"], "c_7_0::graphite");
    assert_eq!(tsv["app.requests.n1"]["target"], "127.0.0.1");
    assert!(
        servers[2].requests().iter().all(|r| r["method"] == "PUT"),
        "{:?}",
        servers[2].requests()
    );
}

#[test]
fn irondb_to_irondb_keeps_types_histograms_and_check_identity() {
    if !IrondbServer::available() {
        return;
    }
    let server = IrondbServer::start(2);
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: http, protocol: http, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n\
         \x20 - {{name: iron, protocol: irondb_raw, url: \"{}\", batch: {{max_delay: 20ms}}, retry: {{initial: 50ms, max: 200ms}}}}\n\
         routes:\n  - {{default: true, to: [iron]}}\n",
        server.url()
    ));
    let t = now_secs();
    let body = [
        format!("M\t{t}.137\t{UUID_FIELD}\tm.i\ti\t-2147483648"),
        format!("M\t{t}.137\t{UUID_FIELD}\tm.I\tI\t4294967295"),
        format!("M\t{t}.137\t{UUID_FIELD}\tm.l\tl\t-9223372036854775808"),
        format!("M\t{t}.137\t{UUID_FIELD}\tm.L\tL\t18446744073709551615"),
        format!("M\t{t}.137\t{UUID_FIELD}\tm.n\tn\t-2.500000000000e-07"),
        format!("M\t{t}.137\t{UUID_FIELD}\tm.s\ts\thello world"),
        format!("M\t{t}.137\t{UUID_FIELD}\tm.null\tn\t[[null]]"),
        format!("H1\t{t}.000\t{UUID_FIELD}\tm.h1|ST[unit:s]\tAAb/AAABzv8AAQAAAAEKAAACGQAAARkCAAE="),
        format!("H2\t{t}.000\t{UUID_FIELD}\tm.h2\tAAEKAAEsAQ=="),
    ]
    .join("\n");
    let (status, answer) = post(
        &format!("http://127.0.0.1:{port}/raw"),
        &format!("{body:?}.encode()"),
        None,
        "POST",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], 0, "{answer}");
    let records = server.wait_for(9, WAIT);
    assert_eq!(records.len(), 9, "{}\n{}", relay.stderr(), server.stderr());
    assert!(server.errors().is_empty(), "{:?}", server.errors());
    let records = by_name(&records);
    let expect = [
        ("m.i", "i", Json::from(-2_147_483_648_i64)),
        ("m.I", "I", Json::from(4_294_967_295_u64)),
        ("m.l", "l", Json::from(i64::MIN)),
        ("m.L", "L", Json::from(u64::MAX)),
        ("m.n", "n", Json::from(-2.5e-7)),
        ("m.s", "s", Json::from("hello world")),
        ("m.null", "n", Json::Null),
    ];
    for (name, kind, value) in expect {
        let record = &records[name];
        assert_eq!(record["type"], kind, "{record}");
        assert_eq!(record["value"], value, "{record}");
        assert_eq!(record["timestamp_ms"], t * 1000 + 137, "{record}");
        // The source identity travels: target, module, account, check.
        assert_eq!(record["target"], "example.com");
        assert_eq!(record["module"], "http");
        assert_eq!(record["account_id"], 123);
        assert_eq!(record["check_name"], "c_123_987654::http");
    }
    let h1 = &records["m.h1"];
    assert_eq!(h1["tags"]["unit"], "s");
    assert_eq!(h1["cumulative"], false);
    assert_eq!(
        h1["value"],
        serde_json::json!([
            [-1, 0, 1],
            [-50, -1, 1],
            [0, 0, 1],
            [10, 0, 2],
            [25, 0, 1],
            [25, 2, 1]
        ])
    );
    assert_eq!(records["m.h2"]["cumulative"], true);
    assert_eq!(records["m.h2"]["value"], serde_json::json!([[10, 0, 300]]));
    // The first two requests were answered 503 and retried.
    assert!(relay.metric("tsrelay_upstream_points_retried_total{upstream=\"iron\"}") >= 9.0);
}

#[test]
fn irondb_refusals_are_counted_not_retried() {
    if !IrondbServer::available() {
        return;
    }
    let server = IrondbServer::start(0);
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n\
         \x20 - {{name: iron, protocol: irondb_flatbuffer, url: \"{}\", batch: {{max_delay: 20ms, max_points: 2}}, {CHECK}}}\n\
         routes:\n  - {{default: true, to: [iron]}}\n",
        server.url()
    ));
    let t = now_secs();
    send_tcp(
        port,
        format!("reject.me 1 {t}\nreject.too 2 {t}\n").as_bytes(),
    );
    let dropped = "tsrelay_upstream_points_dropped_total{upstream=\"iron\",reason=\"rejected\"}";
    assert!(
        wait_until(WAIT, || relay.metric(dropped) == 2.0),
        "{}",
        relay.stderr()
    );
    send_tcp(port, format!("kept.one 3 {t}\n").as_bytes());
    let records = server.wait_for(1, WAIT);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["name"], "kept.one");
}
