//! Debian's graphite-carbon as a real peer: carbon-cache (stores to
//! whisper, read back with the `whisper` module) and carbon-relay.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, python, wait_until};

/// A carbon daemon running in the foreground with its own directory.
pub struct Carbon {
    child: Child,
    dir: tempfile::TempDir,
    /// Plaintext port.
    pub line_port: u16,
    /// Pickle port.
    pub pickle_port: u16,
}

const STORAGE_SCHEMAS: &str = "[all]\npattern = .*\nretentions = 1s:2h\n";

impl Carbon {
    /// Starts carbon-cache storing every metric at one-second resolution for two hours.
    pub fn cache() -> Carbon {
        Self::start("carbon-cache", "cache", "")
    }

    /// Starts carbon-relay forwarding pickle (protocol 2) to `destination` (host:port).
    pub fn relay_to(destination: &str) -> Carbon {
        let extra = format!(
            "RELAY_METHOD = consistent-hashing\nDESTINATIONS = {destination}:a\nDESTINATION_PROTOCOL = pickle\n\
             MAX_DATAPOINTS_PER_MESSAGE = 500\nMAX_QUEUE_SIZE = 100000\nUSE_FLOW_CONTROL = True\n"
        );
        Self::start("carbon-relay", "relay", &extra)
    }

    fn start(program: &str, section: &str, extra: &str) -> Carbon {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        let (line_port, pickle_port, query_port) = (free_port(), free_port(), free_port());
        let conf = format!(
            "[{section}]\nSTORAGE_DIR = {root}/storage\nLOCAL_DATA_DIR = {root}/storage/whisper\n\
             WHITELISTS_DIR = {root}/storage/lists\nCONF_DIR = {root}\nLOG_DIR = {root}/log\nPID_DIR = {root}\n\
             ENABLE_LOGROTATION = False\nUSER =\nMAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\n\
             MAX_CREATES_PER_MINUTE = inf\nENABLE_TAGS = False\nLINE_RECEIVER_INTERFACE = 127.0.0.1\n\
             LINE_RECEIVER_PORT = {line_port}\nENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
             PICKLE_RECEIVER_PORT = {pickle_port}\nCACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {query_port}\n\
             LOG_LISTENER_CONN_SUCCESS = False\nLOG_UPDATES = False\nLOG_CREATES = False\nWHISPER_AUTOFLUSH = True\n{extra}"
        );
        std::fs::create_dir_all(dir.path().join("log")).expect("log dir");
        std::fs::write(dir.path().join("carbon.conf"), conf).expect("carbon.conf");
        std::fs::write(dir.path().join("storage-schemas.conf"), STORAGE_SCHEMAS).expect("schemas");
        std::fs::write(
            dir.path().join("relay-rules.conf"),
            "[default]\ndefault = true\ndestinations = 127.0.0.1:1:a\n",
        )
        .expect("relay rules");
        let child = Command::new(program)
            .arg(format!("--config={root}/carbon.conf"))
            .arg("--nodaemon")
            .arg("start")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("console.log")).expect("console log"))
            .spawn()
            .expect("start carbon");
        let carbon = Carbon {
            child,
            dir,
            line_port,
            pickle_port,
        };
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", line_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", pickle_port)).is_ok()
        });
        assert!(up, "{program} did not start:\n{}", carbon.console());
        carbon
    }

    /// What carbon printed.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// The whisper directory.
    pub fn whisper_dir(&self) -> PathBuf {
        self.dir.path().join("storage/whisper")
    }

    /// Stored `(timestamp, value)` pairs per metric name (tagged names are
    /// looked up the way carbon stores them: under `_tagged/` by SHA-256).
    pub fn stored(&self, names: &[&str]) -> BTreeMap<String, Vec<(i64, f64)>> {
        const FETCH: &str = r#"
import hashlib, os, sys, time, whisper
root, names = sys.argv[1], sys.argv[2:]
for name in names:
    if ';' in name:
        digest = hashlib.sha256(name.encode()).hexdigest()
        path = os.path.join(root, '_tagged', digest[0:3], digest[3:6], digest + '.wsp')
    else:
        path = os.path.join(root, *name.split('.')) + '.wsp'
    if not os.path.exists(path):
        continue
    (start, end, step), values = whisper.fetch(path, int(time.time()) - 7000, int(time.time()) + 10)
    for i, v in enumerate(values):
        if v is not None:
            print('%s\t%d\t%r' % (name, start + i * step, v))
"#;
        let root = self.whisper_dir().display().to_string();
        let mut args = vec![root.as_str()];
        args.extend_from_slice(names);
        let output = python(FETCH, &args);
        parse_stored(&output)
    }
}

/// Parses `name<TAB>timestamp<TAB>value` lines.
fn parse_stored(text: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(name), Some(ts), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(ts), Ok(value)) = (ts.parse(), value.parse()) else {
            continue;
        };
        out.entry(name.to_owned()).or_default().push((ts, value));
    }
    out
}

impl Drop for Carbon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
