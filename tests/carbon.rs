//! Interoperability with Debian's graphite-carbon: tsrelay feeds a real
//! carbon-cache over plaintext and pickle (values read back from whisper),
//! and a real carbon-relay feeds tsrelay's pickle listener.

use std::time::Duration;

use crate::util::carbon::Carbon;
use crate::util::{free_port, now_secs, require_peer, send_tcp, wait_until, Relay, Sink};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn tsrelay_feeds_carbon_cache_over_plaintext_and_pickle() {
    if !require_peer("carbon-cache") {
        return;
    }
    let carbon = Carbon::cache();
    let port = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:{port}}}\n\
         upstreams:\n  - {{name: line, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}}}}\n\
         \x20 - {{name: pickle, protocol: graphite_pickle, address: 127.0.0.1:{}, batch: {{max_points: 3, max_delay: 20ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"vialine.\"}}, to: [line]}}\n  - {{match: {{prefix: \"viapickle.\"}}, to: [pickle]}}\n",
        carbon.line_port, carbon.pickle_port
    ));
    let t = now_secs() - 60;
    let mut input = String::new();
    for via in ["vialine", "viapickle"] {
        input.push_str(&format!("{via}.int 42 {t}\n"));
        input.push_str(&format!("{via}.float 0.1 {}\n", t + 1));
        input.push_str(&format!("{via}.precise 3.141592653589793 {}\n", t + 2));
        input.push_str(&format!("{via}.big 1e20 {}.9\n", t + 3));
        input.push_str(&format!("{via}.neg -7.25 {}\n", t + 4));
        input.push_str(&format!("{via}.tagged;rack=a1;dc=dc1 9 {}\n", t + 5));
    }
    send_tcp(port, input.as_bytes());
    for via in ["vialine", "viapickle"] {
        let names: Vec<String> = ["int", "float", "precise", "big", "neg"]
            .iter()
            .map(|m| format!("{via}.{m}"))
            .chain(std::iter::once(format!("{via}.tagged;dc=dc1;rack=a1")))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let complete = wait_until(WAIT, || {
            carbon
                .stored(&names)
                .values()
                .filter(|v| !v.is_empty())
                .count()
                == 6
        });
        assert!(
            complete,
            "carbon stored {:?}\n{}\n{}",
            carbon.stored(&names),
            relay.stderr(),
            carbon.console()
        );
        let stored = carbon.stored(&names);
        let expected = [
            (t, 42.0),
            (t + 1, 0.1),
            (t + 2, std::f64::consts::PI),
            (t + 3, 1e20),
            (t + 4, -7.25),
            (t + 5, 9.0),
        ];
        for (name, point) in names.iter().zip(expected) {
            assert_eq!(stored[*name], vec![point], "{name}");
        }
    }
}

#[test]
fn carbon_relay_feeds_tsrelay_pickle_listener() {
    if !require_peer("carbon-relay") {
        return;
    }
    let sink = Sink::start();
    let pickle = free_port();
    let relay = Relay::start(&format!(
        "listeners:\n  - {{name: pickle, protocol: graphite_pickle, listen: 127.0.0.1:{pickle}}}\n\
         upstreams:\n  - {{name: sink, protocol: graphite_plaintext, address: 127.0.0.1:{}, batch: {{max_delay: 20ms}}}}\n\
         routes:\n  - {{match: {{prefix: \"\"}}, to: [sink]}}\n",
        sink.port
    ));
    let carbon = Carbon::relay_to(&format!("127.0.0.1:{pickle}"));
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(&format!("cr.m{} {i}.5 {}\n", i % 100, 1_700_000_000 + i));
    }
    input.push_str("cr.tagged;z=1;a=2 3 1700000000\n");
    send_tcp(carbon.line_port, input.as_bytes());
    let arrived = wait_until(WAIT, || sink.line_count() == 2001);
    assert!(
        arrived,
        "got {} lines\n{}\n{}",
        sink.line_count(),
        relay.stderr(),
        carbon.console()
    );
    let lines = sink.lines();
    for i in [0usize, 999, 1999] {
        let expected = format!("cr.m{} {i}.5 {}", i % 100, 1_700_000_000 + i);
        assert!(lines.contains(&expected), "missing {expected}");
    }
    assert!(lines.contains(&"cr.tagged;a=2;z=1 3 1700000000".to_owned()));
    assert_eq!(
        relay.metric("tsrelay_listener_points_received_total{listener=\"pickle\"}"),
        2001.0
    );
}
