//! A real `plumbline dev` process on a free port, with its own data directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plumbline::sources::SourceKind;
use plumbline::sources::sign::{self, Envelope};

/// The `plumbline` binary next to this test binary (`tests/run` builds it first).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PLUMBLINE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("plumbline");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p plumbline-cli` (tests/run does)",
        bin.display()
    );
    bin
}

pub struct Dev {
    pub url: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl Dev {
    /// Starts `plumbline dev --config <config>`; returns once it listens.
    pub fn start(config: &Path, data_dir: &Path, envs: &[(&str, &str)]) -> Self {
        Self::spawn(Command::new(binary()), config, data_dir, envs, &[])
    }

    /// Starts `plumbline dev` with more arguments (`--max-receives 2`, …).
    pub fn start_with(
        config: &Path,
        data_dir: &Path,
        envs: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        Self::spawn(Command::new(binary()), config, data_dir, envs, args)
    }

    /// Starts `plumbline dev` with its data directory on a tmpfs of `size` (`8m`, …) mounted
    /// in a mount namespace of its own (needs root, as CI and this machine have), so a test can
    /// fill that disk through [`Dev::host_path`] and free it again.
    pub fn start_on_tmpfs(
        config: &Path,
        data_dir: &Path,
        envs: &[(&str, &str)],
        size: &str,
    ) -> Self {
        std::fs::create_dir_all(data_dir).expect("mount point");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} plumbline-test \"$0\" && exec \"$@\""
            ))
            .arg(data_dir)
            .arg(binary());
        Self::spawn(command, config, data_dir, envs, &[])
    }

    fn spawn(
        mut command: Command,
        config: &Path,
        data_dir: &Path,
        envs: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let mut child = command
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(data_dir.with_extension("stderr.log"))
                    .expect("log file"),
            ))
            .spawn()
            .expect("spawn plumbline dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first).expect("banner");
        // Keep reading, so the process never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!(
                    "no URL in {first:?}: see {}",
                    data_dir.with_extension("stderr.log").display()
                )
            })
            .to_owned();
        Self {
            url,
            data_dir: data_dir.to_owned(),
            child,
        }
    }

    /// `path` inside the data directory as this process sees it (through its own mounts).
    pub fn host_path(&self, path: &str) -> PathBuf {
        let inside = self.data_dir.join(path);
        Path::new(&format!("/proc/{}/root", self.child.id())).join(
            inside
                .strip_prefix("/")
                .expect("an absolute data directory"),
        )
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    /// Asks for a clean stop (SIGTERM) and waits for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("reap")
    }

    /// The status page's JSON (`/ops/status`).
    pub async fn status(&self) -> serde_json::Value {
        super::http()
            .get(format!("{}/ops/status", self.url))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status JSON")
    }

    /// Runs a `plumbline` command against this instance's data directory; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("run plumbline");
        assert!(
            out.status.success(),
            "plumbline {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed request for `source` of `kind`, ready to POST.
pub fn signed(
    kind: SourceKind,
    secret: &str,
    event_id: &str,
    topic: Option<&str>,
    body: &[u8],
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = sign::sign(
        kind,
        secret,
        Envelope {
            event_id,
            timestamp: now,
            topic,
        },
        body,
    )
    .expect("signs");
    (signed.headers, signed.body)
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    request: &(Vec<(&'static str, String)>, Vec<u8>),
) -> Option<u16> {
    let mut builder = client.post(url).body(request.1.clone());
    for (k, v) in &request.0 {
        builder = builder.header(*k, v);
    }
    builder.send().await.ok().map(|r| r.status().as_u16())
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}
