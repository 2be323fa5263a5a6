//! KairosDB telnet and REST in and out: telnet into a real carbon-cache,
//! Graphite into InfluxDB's OpenTSDB listener, REST from Python `requests`
//! into Graphite, and Graphite into a KairosDB-validating REST test server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::carbon::Carbon;
use crate::util::{
    free_port, http_get, now_secs, python, require_peer, send_tcp, system_python, wait_until,
    Relay, Sink,
};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn telnet_put_lines_reach_carbon_cache() {
    if !require_peer("carbon-cache") {
        return;
    }
    let carbon = Carbon::cache();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: telnet, protocol: kairosdb_telnet, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: carbon, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [carbon]}}\n",
        carbon.line_port
    ));
    let t = now_secs() - 60;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "put sys.cpu {t} 42 host=a dc=x\nputm sys.mem {}000 7.5 host=a\nput bare.metric {} 3\n\
         put bad.value {t} 1e5 host=a\nput too few\nversion\n",
        t + 1,
        t + 2
    )
    .expect("send");
    let mut reply = String::new();
    BufReader::new(stream.try_clone().expect("clone"))
        .read_line(&mut reply)
        .expect("version reply");
    assert!(reply.starts_with("tsrelay "), "{reply}");
    drop(stream);
    let names = [
        "sys.cpu;dc=x;host=a",
        "sys.mem;host=a",
        "bare.metric;add=tag",
    ];
    let stored = || carbon.stored(&names);
    assert!(
        wait_until(WAIT, || stored().values().filter(|v| !v.is_empty()).count()
            == 3),
        "{:?}\n{}",
        stored(),
        relay.stderr()
    );
    let stored = stored();
    assert_eq!(stored["sys.cpu;dc=x;host=a"], vec![(t, 42.0)]);
    assert_eq!(stored["sys.mem;host=a"], vec![(t + 1, 7.5)]);
    assert_eq!(stored["bare.metric;add=tag"], vec![(t + 2, 3.0)]);
    let rejected = |reason: &str| {
        relay.metric(&format!(
            "tsrelay_listener_points_rejected_total{{listener=\"telnet\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(rejected("bad_value"), 1.0);
    assert_eq!(rejected("too_few_words"), 1.0);
}

/// InfluxDB 1.x with its OpenTSDB telnet listener and HTTP API on loopback.
struct Influx {
    child: Child,
    http: u16,
    opentsdb: u16,
    _dir: tempfile::TempDir,
}

impl Influx {
    fn start() -> Influx {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        let (rpc, http, opentsdb) = (free_port(), free_port(), free_port());
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{root}/meta\"\n\
             [data]\n  dir = \"{root}/data\"\n  wal-dir = \"{root}/wal\"\n  query-log-enabled = false\n\
             [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n\
             [[opentsdb]]\n  enabled = true\n  bind-address = \"127.0.0.1:{opentsdb}\"\n  database = \"opentsdb\"\n  batch-size = 1\n  batch-timeout = \"50ms\"\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).expect("config");
        let child = Command::new("influxd")
            .arg("-config")
            .arg(dir.path().join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("influxd.log")).expect("log"))
            .spawn()
            .expect("start influxd");
        let influx = Influx {
            child,
            http,
            opentsdb,
            _dir: dir,
        };
        let up = wait_until(WAIT, || {
            TcpStream::connect(("127.0.0.1", influx.opentsdb)).is_ok()
                && http_get(format!("127.0.0.1:{http}").parse().expect("addr"), "/ping").is_some()
        });
        assert!(up, "influxd did not start");
        influx
    }

    fn query(&self, q: &str) -> String {
        let query: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        http_get(
            format!("127.0.0.1:{}", self.http).parse().expect("addr"),
            &format!("/query?db=opentsdb&epoch=ms&q={query}"),
        )
        .map(|(_, body)| body)
        .unwrap_or_default()
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn graphite_reaches_influxdb_opentsdb_listener_as_kairos_telnet() {
    if !require_peer("influxd") {
        return;
    }
    let influx = Influx::start();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: kt, protocol: kairosdb_telnet, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}},\n\
         \x20     templates: [\"servers.host.measurement*\"], add_tags: {{source: graphite}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [kt]}}\n",
        influx.opentsdb
    ));
    let t = now_secs() - 30;
    send_tcp(
        port,
        format!(
            "servers.web01.cpu_load 0.5 {t}\nservers.web02.cpu_load 1.25 {}\n",
            t + 1
        )
        .as_bytes(),
    );
    let answer = || influx.query("SELECT value, host, source FROM cpu_load");
    assert!(
        wait_until(WAIT, || answer().contains("web02")),
        "{}\n{}",
        answer(),
        relay.stderr()
    );
    let body = answer();
    assert!(
        body.contains(&format!("[{}000,0.5,\"web01\",\"graphite\"]", t)),
        "{body}"
    );
    assert!(
        body.contains(&format!("[{}000,1.25,\"web02\",\"graphite\"]", t + 1)),
        "{body}"
    );
}

/// Posts KairosDB REST bodies with Python `requests`, gzip and plain.
const REST_CLIENT: &str = r#"
import gzip, json, sys, requests
url = 'http://127.0.0.1:%s/api/v1/datapoints' % sys.argv[1]
out = []
valid = [{"name": "archive_file_tracked", "datapoints": [[1359788400000, 123], [1359788300000, 13.2]],
          "tags": {"host": "server1", "data_center": "DC1"}, "ttl": 300},
         {"name": "archive_file_search", "timestamp": 1359786400000, "value": 321, "tags": {"host": "server2"}}]
r = requests.post(url, data=json.dumps(valid))
out.append([r.status_code, r.text])
r = requests.post(url, data=gzip.compress(json.dumps({"name": "gz.metric", "timestamp": 1359786400000,
                  "value": 7, "tags": {"h": "x"}}).encode()), headers={"Content-Encoding": "gzip"})
out.append([r.status_code, r.text])
mixed = [{"name": "ok.one", "timestamp": 1359786400000, "value": 1, "tags": {"a": "b"}},
         {"name": "no.tags", "datapoints": [[1, 2]]},
         {"name": "ok.two", "time": 1359786400000, "timestamp": 9, "value": 2, "tags": {"a": "b"}}]
r = requests.post(url, data=json.dumps(mixed))
out.append([r.status_code, r.json()])
r = requests.post(url, data=b'{"name": ')
out.append([r.status_code, r.json()])
print(json.dumps(out))
"#;

#[test]
fn rest_requests_are_relayed_to_graphite() {
    let sink = Sink::start();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: http, protocol: http, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n",
        sink.port
    ));
    let answers = python(REST_CLIENT, &[&port.to_string()]);
    let answers: serde_json::Value = serde_json::from_str(&answers).expect("client output");
    assert_eq!(answers[0][0], 204, "{answers}");
    assert_eq!(answers[1][0], 204, "{answers}");
    assert_eq!(answers[2][0], 400, "{answers}");
    assert_eq!(
        answers[2][1]["errors"],
        serde_json::json!([
            "metric[1](name=no.tags).tags count must be greater than or equal to 1."
        ])
    );
    assert_eq!(answers[3][0], 400, "{answers}");
    assert!(
        wait_until(WAIT, || sink.line_count() == 6),
        "{:?}\n{}",
        sink.lines(),
        relay.stderr()
    );
    let mut lines = sink.lines();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "archive_file_search;host=server2 321 1359786400",
            "archive_file_tracked;data_center=DC1;host=server1 123 1359788400",
            "archive_file_tracked;data_center=DC1;host=server1 13.2 1359788300",
            "gz.metric;h=x 7 1359786400",
            "ok.one;a=b 1 1359786400",
            "ok.two;a=b 2 1359786400",
        ]
    );
}

/// The KairosDB-validating test server of tests/peers, recording to a file.
struct KairosServer {
    child: Child,
    port: u16,
    record: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl KairosServer {
    fn start(fail_first: u32) -> KairosServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let record = dir.path().join("record.jsonl");
        let child = Command::new(system_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/kairosdb_server.py"
            ))
            .arg(port.to_string())
            .arg(&record)
            .arg(fail_first.to_string())
            .spawn()
            .expect("start the KairosDB test server");
        assert!(wait_until(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_ok()));
        KairosServer {
            child,
            port,
            record,
            _dir: dir,
        }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("json line"))
            .collect()
    }
}

impl Drop for KairosServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn graphite_reaches_a_kairosdb_rest_server_with_templates_and_retries() {
    let server = KairosServer::start(2);
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - name: kairos\n    protocol: kairosdb_rest\n    url: http://127.0.0.1:{}/api/v1/datapoints\n\
         \x20   batch: {{max_points: 100, max_delay: 20ms}}\n    retry: {{initial: 20ms, max: 100ms}}\n\
         \x20   templates: [\"servers.host.measurement*\"]\n    add_tags: {{source: graphite}}\n\
         \x20 - name: strict\n    protocol: kairosdb_rest\n    url: http://127.0.0.1:{}/api/v1/datapoints\n    gzip: false\n\
         \x20   batch: {{max_delay: 20ms}}\n\
         routes:\n  - {{match: {{prefix: \"servers.\"}}, to: [kairos], stop: true}}\n  - {{match: {{prefix: \"\"}}, to: [strict]}}\n",
        server.port, server.port
    ));
    let mut input = String::new();
    for i in 0..250 {
        input.push_str(&format!(
            "servers.web{:02}.cpu.load {i}.5 1700000{:03}\n",
            i % 10,
            i
        ));
    }
    input.push_str(
        "untagged.metric 1 1700000000\nreject.me;a=b 2 1700000000\nkept.tagged;a=b 3 1700000000\n",
    );
    send_tcp(port, input.as_bytes());
    assert!(
        wait_until(WAIT, || server.records().len() == 251),
        "{} records\n{}",
        server.records().len(),
        relay.stderr()
    );
    let records = server.records();
    let first = records
        .iter()
        .find(|r| r["timestamp"] == 1_700_000_000_000i64 && r["name"] == "cpu.load")
        .expect("the first point");
    assert_eq!(
        first["tags"],
        serde_json::json!({"host": "web00", "source": "graphite"})
    );
    assert_eq!(first["value"], 0.5);
    assert!(records
        .iter()
        .any(|r| r["name"] == "kept.tagged" && r["value"] == 3.0));
    let metric = |sample: &str| relay.metric(sample);
    assert!(metric("tsrelay_upstream_points_retried_total{upstream=\"kairos\"}") > 0.0);
    assert_eq!(
        metric("tsrelay_upstream_points_sent_total{upstream=\"kairos\"}"),
        250.0
    );
    assert_eq!(
        metric(
            "tsrelay_upstream_points_dropped_total{upstream=\"strict\",reason=\"missing_tags\"}"
        ),
        1.0
    );
    assert!(wait_until(WAIT, || metric(
        "tsrelay_upstream_points_dropped_total{upstream=\"strict\",reason=\"rejected\"}"
    ) >= 1.0));
    assert!(relay
        .stderr()
        .contains("Upstream rejected a batch; dropping it."));
}
