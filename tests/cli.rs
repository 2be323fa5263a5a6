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
