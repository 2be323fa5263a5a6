//! Graphite plaintext and pickle in and out through the real binary.

use std::time::Duration;

use tsrelay::codec::graphite_pickle::GraphitePickleDecoder;
use tsrelay::codec::{Rejects, StreamDecoder};
use tsrelay::model::{Batch, Timestamp};

use crate::util::{free_port, python, send_tcp, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(15);

fn plaintext_relay(listen: u16, upstream_protocol: &str, sink: u16, extra_listener: &str) -> Relay {
    Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{listen}, udp: true, max_line_length: 100}}\n{extra_listener}\
         upstreams:\n  - {{name: sink, protocol: {upstream_protocol}, address: 127.0.0.1:{sink}, batch: {{max_points: 500, max_delay: 20ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n"
    ))
}

/// A relay with a plaintext and a pickle listener (with extra pickle
/// options) relaying plaintext to `sink`; returns both ports.
fn pickle_relay(sink: &Sink, pickle_options: &str) -> (u16, u16, Relay) {
    let (plain, pickle) = (free_port(), free_port());
    let listener = format!(
        "  - {{name: pickle, protocol: graphite_pickle, listen: 127.0.0.1:{pickle}{pickle_options}}}\n"
    );
    let relay = plaintext_relay(plain, "graphite_plaintext", sink.port, &listener);
    (plain, pickle, relay)
}

#[test]
fn plaintext_lines_are_relayed_and_bad_lines_counted() {
    let sink = Sink::start();
    let port = free_port();
    let relay = plaintext_relay(port, "graphite_plaintext", sink.port, "");
    let mut input = b"servers.web01.load 0.42 1700000000\n".to_vec();
    input.extend_from_slice(b"a.b\t1e3\t1700000000.9\r\n");
    input.extend_from_slice(b"disk.used;rack=a1;dc=dc1 9 1700000000\n");
    input.extend_from_slice(b"a.b nan 1700000000\n");
    input.extend_from_slice(b"a.b 5 N\na.b 5\na.b 1 2 3\nbad\xff 1 1700000000\na.b 1 inf\n");
    input.extend_from_slice(&[b'x'; 150]);
    input.extend_from_slice(b" 1 1700000000\nlast.one -2.5 1700000001\npartial 1");
    send_tcp(port, &input);
    assert!(
        wait_until(WAIT, || sink.line_count() >= 4),
        "{}",
        relay.stderr()
    );
    assert_eq!(
        sink.lines(),
        vec![
            "servers.web01.load 0.42 1700000000",
            "a.b 1000 1700000000",
            "disk.used;dc=dc1;rack=a1 9 1700000000",
            "last.one -2.5 1700000001",
        ]
    );
    let rejected = |reason: &str| {
        relay.metric(&format!(
            "tsrelay_listener_points_rejected_total{{listener=\"plain\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(rejected("nan_value"), 1.0);
    assert_eq!(rejected("bad_timestamp"), 1.0);
    assert_eq!(rejected("field_count"), 2.0);
    assert_eq!(rejected("invalid_utf8"), 1.0);
    assert_eq!(rejected("non_finite_timestamp"), 1.0);
    assert_eq!(rejected("line_too_long"), 1.0);
    assert_eq!(rejected("truncated"), 1.0);
    assert_eq!(
        relay.metric("tsrelay_listener_points_received_total{listener=\"plain\"}"),
        4.0
    );
    assert!(wait_until(WAIT, || relay.metric(
        "tsrelay_upstream_points_sent_total{upstream=\"sink\"}"
    ) == 4.0));
    let log = relay.stderr();
    assert!(
        log.contains("Rejected input record.") && log.contains("peer=127.0.0.1:"),
        "{log}"
    );
}

#[test]
fn udp_datagrams_are_relayed() {
    let sink = Sink::start();
    let port = free_port();
    let relay = plaintext_relay(port, "graphite_plaintext", sink.port, "");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .send_to(b"u.a 1 1700000000\nu.b 2 1700000000", ("127.0.0.1", port))
        .expect("send");
    socket
        .send_to(b"u.c 3 1700000000\n", ("127.0.0.1", port))
        .expect("send");
    assert!(
        wait_until(WAIT, || sink.line_count() == 3),
        "{}",
        relay.stderr()
    );
    let mut lines = sink.lines();
    lines.sort();
    assert_eq!(
        lines,
        vec!["u.a 1 1700000000", "u.b 2 1700000000", "u.c 3 1700000000"]
    );
}

/// Pickles as Python clients write them, protocols 0 to 5, Python 2 style
/// byte-string names included.
const PICKLE_CLIENT: &str = r#"
import pickle, socket, struct, sys
port = int(sys.argv[1])
s = socket.create_connection(('127.0.0.1', port))
def send(obj, proto):
    data = pickle.dumps(obj, protocol=proto)
    s.sendall(struct.pack('!L', len(data)) + data)
for proto in (0, 1, 2, 3, 4, 5):
    send([('py.proto%d' % proto, (1700000000, proto + 0.5)), ['py.list%d' % proto, [1700000000.25, '7']]], proto)
# Python 2 clients: a protocol-2 stream with SHORT_BINSTRING names and a protocol-0 text pickle.
py2 = b'\x80\x02]q\x00(U\x06py2.p2q\x01J\x00\xf1\x53\x65G?\xf8\x00\x00\x00\x00\x00\x00\x86\x86e.'
s.sendall(struct.pack('!L', len(py2)) + py2)
py0 = b"(lp0\n(S'py2.p0'\np1\n(I1700000000\nF2.5\ntp2\ntp3\na."
s.sendall(struct.pack('!L', len(py0)) + py0)
# A global is refused; the connection goes on.
evil = b"cos\nsystem\n(S'true'\ntR."
s.sendall(struct.pack('!L', len(evil)) + evil)
send([('after.evil', (1700000000, 1))], 2)
s.shutdown(socket.SHUT_WR)
s.recv(1)
"#;

#[test]
fn pickle_from_python_clients_of_every_protocol() {
    let sink = Sink::start();
    let (_, pickle, relay) = pickle_relay(&sink, "");
    python(PICKLE_CLIENT, &[&pickle.to_string()]);
    assert!(
        wait_until(WAIT, || sink.line_count() >= 15),
        "{}",
        relay.stderr()
    );
    let mut lines = sink.lines();
    lines.sort();
    let mut expected = vec![
        "after.evil 1 1700000000".to_owned(),
        "py2.p0 2.5 1700000000".to_owned(),
        "py2.p2 1.5 1700000000".to_owned(),
    ];
    for proto in 0..6 {
        expected.push(format!("py.list{proto} 7 1700000000"));
        expected.push(format!("py.proto{proto} {proto}.5 1700000000"));
    }
    expected.sort();
    assert_eq!(lines, expected);
    assert_eq!(
        relay.metric(
            "tsrelay_listener_points_rejected_total{listener=\"pickle\",reason=\"unsafe_pickle\"}"
        ),
        1.0
    );
}

#[test]
fn oversized_pickle_frame_closes_only_that_connection() {
    let sink = Sink::start();
    let (plain, pickle, relay) = pickle_relay(&sink, ", max_frame_bytes: 1KiB");
    send_tcp(pickle, &[0x00, 0x00, 0x04, 0x01, b'(']);
    assert!(wait_until(WAIT, || relay.metric(
        "tsrelay_listener_connections_closed_on_error_total{listener=\"pickle\"}"
    ) == 1.0));
    send_tcp(plain, b"still.alive 1 1700000000\n");
    assert!(wait_until(WAIT, || sink.line_count() == 1));
    assert!(relay
        .stderr()
        .contains("frame of 1025 bytes exceeds the limit of 1024 bytes"));
}

#[test]
fn plaintext_in_pickle_out_in_frames_of_max_points() {
    let sink = Sink::start();
    let port = free_port();
    let relay = plaintext_relay(port, "graphite_pickle", sink.port, "");
    let mut input = Vec::new();
    for i in 0..1234 {
        input.extend_from_slice(format!("p.m{i};k=v{} {i}.5 1700000000.25\n", i % 7).as_bytes());
    }
    send_tcp(port, &input);
    let decode = |bytes: &[u8]| {
        let mut batch = Batch::new();
        let mut rejects = Rejects::default();
        let used = GraphitePickleDecoder::new(1 << 20)
            .decode(bytes, Timestamp::from_millis(0), &mut batch, &mut rejects)
            .expect("valid frames");
        (used, batch, rejects.total())
    };
    assert!(
        wait_until(WAIT, || decode(&sink.bytes()).1.len() == 1234),
        "{}",
        relay.stderr()
    );
    let bytes = sink.bytes();
    let (used, batch, rejected) = decode(&bytes);
    assert_eq!((used, rejected), (bytes.len(), 0));
    let point = batch.get(1233).expect("last point").to_point();
    assert_eq!(point.name, "p.m1233");
    assert_eq!(point.tags, vec![("k".to_owned(), "v1".to_owned())]);
    assert_eq!(point.timestamp.as_millis(), 1_700_000_000_250);
    assert_eq!(point.value.as_f64(), Some(1233.5));
    // Frames hold at most max_points (500) points: walk the length headers.
    let mut frames = 0;
    let mut offset = 0;
    while offset < bytes.len() {
        let len =
            u32::from_be_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        let (_, frame, _) = decode(&bytes[offset..offset + 4 + len]);
        assert!(frame.len() <= 500);
        offset += 4 + len;
        frames += 1;
    }
    assert!(frames >= 3);
}

#[test]
fn routes_fan_out_stop_and_count_unrouted() {
    let (a, b) = (Sink::start(), Sink::start());
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: a, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 10ms}}}}\n\
         \x20 - {{name: b, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 10ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"servers.\"}}, to: [a], stop: true}}\n\
         \x20 - {{match: {{glob: \"apps.*.cpu\"}}, to: [a, b]}}\n\
         \x20 - {{match: {{regex: \"mem$\"}}, to: [b]}}\n",
        a.port, b.port
    ));
    send_tcp(
        port,
        b"servers.x.mem 1 1700000000\napps.web.cpu 2 1700000000\napps.web.mem 3 1700000000\nother.thing 4 1700000000\n",
    );
    assert!(wait_until(WAIT, || a.line_count() == 2 && b.line_count() == 2));
    assert_eq!(
        a.lines(),
        vec!["servers.x.mem 1 1700000000", "apps.web.cpu 2 1700000000"]
    );
    assert_eq!(
        b.lines(),
        vec!["apps.web.cpu 2 1700000000", "apps.web.mem 3 1700000000"]
    );
    assert_eq!(relay.metric("tsrelay_points_unrouted_total"), 1.0);
}

#[test]
fn upstream_outage_is_retried_until_delivered() {
    let sink_port = free_port();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{sink_port}, batch: {{max_delay: 10ms}}, retry: {{initial: 20ms, max: 200ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n"
    ));
    send_tcp(
        port,
        &crate::util::numbered_lines("outage", 1000, 1_700_000_000),
    );
    assert!(wait_until(WAIT, || relay.metric(
        "tsrelay_upstream_send_errors_total{upstream=\"sink\"}"
    ) >= 2.0));
    let sink = Sink::start_on(sink_port, true);
    assert!(
        wait_until(WAIT, || sink.line_count() == 1000),
        "{}",
        relay.stderr()
    );
    assert_eq!(
        relay.metric("tsrelay_upstream_points_sent_total{upstream=\"sink\"}"),
        1000.0
    );
    assert!(relay.stderr().contains("Upstream send failed; will retry."));
    assert!(relay.stderr().contains("Upstream connected again."));
}

#[test]
fn sigterm_drains_queued_points_and_exits_cleanly() {
    let sink = Sink::start();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_points: 100000, max_delay: 10s}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n",
        sink.port
    ));
    send_tcp(
        port,
        &crate::util::numbered_lines("drain", 5000, 1_700_000_000),
    );
    assert!(wait_until(WAIT, || relay.metric(
        "tsrelay_listener_points_received_total{listener=\"plain\"}"
    ) == 5000.0));
    // The chunk waits for max_delay (10 s); shutdown must flush it now.
    assert_eq!(sink.line_count(), 0);
    let status = relay.stop();
    assert!(status.success());
    assert!(wait_until(WAIT, || sink.line_count() == 5000));
}
