//! The operator commands' behaviour as a shell sees it.

use std::process::Command;

use crate::helpers::dev::binary;

/// Runs `plumbline args` with standard output on a pipe whose reader is already gone, as
/// `plumbline … | head -1` leaves it once `head` has its line.
fn with_closed_stdout(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(binary())
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run plumbline")
}

#[test]
fn a_closed_standard_output_ends_a_command_quietly() {
    let config = crate::helpers::repo_path("infra/config/plumbline.toml");
    let config = config.to_str().expect("utf8 path");
    for args in [
        &["contract", "schema"][..],
        &["send", "--list"],
        &["config", "check", config],
    ] {
        let out = with_closed_stdout(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "plumbline {args:?} exited {:?}: {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "plumbline {args:?} wrote: {stderr}");
    }
}

#[test]
fn an_invalid_config_still_fails_with_its_problems() {
    // The exit status of a negative answer is unchanged by the output path.
    let dir = std::env::temp_dir().join(crate::helpers::unique("plumbline-cli"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[sources.stripe]\nkind = \"nope\"\n").expect("write");
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("run plumbline");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown variant `nope`"),
        "{out:?}"
    );
}
