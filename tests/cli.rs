//! The command line: `check` validates and summarises; bad configs fail
//! with the YAML path; the shipped relay.yaml is valid.

use std::process::Command;

fn tsrelay(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tsrelay"))
        .args(args)
        .output()
        .expect("run tsrelay");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn shipped_relay_yaml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.yaml");
    let (ok, stdout, stderr) = tsrelay(&["check", "-c", path]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("plain: graphite_plaintext on 0.0.0.0:2003 (+udp)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stdout: graphite_plaintext to stdout"),
        "{stdout}"
    );
}

#[test]
fn invalid_config_names_the_yaml_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - {name: p, protocol: graphite_plaintext, listen: 127.0.0.1:2003, max_line_lenght: 5}\n",
    )
    .expect("write");
    let (ok, _, stderr) = tsrelay(&["check", "-c", path.to_str().expect("utf-8 path")]);
    assert!(!ok);
    assert!(
        stderr.contains("listeners[0].max_line_lenght: unknown field `max_line_lenght`"),
        "{stderr}"
    );
    let (ok, _, stderr) = tsrelay(&["-c", "/nonexistent/relay.yaml"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read /nonexistent/relay.yaml"),
        "{stderr}"
    );
}

#[test]
fn readme_configuration_reference_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let block = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block in the README");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readme.yaml");
    std::fs::write(&path, block).expect("write");
    let (ok, stdout, stderr) = tsrelay(&["check", "-c", path.to_str().expect("utf-8 path")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("5: default -> debug"), "{stdout}");
    assert!(stdout.contains("ring: CarbonCh, replication 1"), "{stdout}");
}

fn translate(args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsrelay"))
        .arg("translate")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tsrelay translate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write input");
    let output = child.wait_with_output().expect("output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn translate_converts_offline_with_templates() {
    let (ok, stdout, stderr) = translate(
        &[
            "--from",
            "graphite_plaintext",
            "--to",
            "kairosdb_telnet",
            "--template",
            "servers.host.measurement*",
            "--add-tag",
            "source=graphite",
        ],
        "servers.web01.cpu.load 1.5 1700000000\nbad line\nother.metric 2 1700000001",
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "put cpu.load 1700000000000 1.5 host=web01 source=graphite\nput other.metric 1700000001000 2.0 source=graphite\n"
    );
    assert!(
        stderr.contains("translated 2 of 2 points; rejected 1 input records"),
        "{stderr}"
    );

    let (ok, stdout, _) = translate(
        &["--from", "kairosdb_telnet", "--to", "graphite_plaintext"],
        "put sys.cpu 1700000000 42 host=a dc=x\nputs sys.state 1700000000000 up host=a\n",
    );
    assert!(ok);
    assert_eq!(stdout, "sys.cpu;dc=x;host=a 42 1700000000\n");

    let (ok, stdout, stderr) = translate(
        &["--from", "graphite_plaintext", "--to", "kairosdb_rest"],
        "untagged 1 1700000000\n",
    );
    assert!(ok);
    assert_eq!(stdout, "");
    assert!(stderr.contains("dropped missing_tags: 1"), "{stderr}");
    let (ok, _, stderr) = translate(&["--from", "amqp", "--to", "graphite_plaintext"], "");
    assert!(!ok);
    assert!(stderr.contains("cannot read amqp"), "{stderr}");
}
