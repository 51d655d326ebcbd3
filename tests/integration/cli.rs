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
        // Nothing of the closed pipe: at most the configuration's own warnings.
        assert!(
            stderr.lines().all(|line| line.contains(": warning: ")),
            "plumbline {args:?} wrote: {stderr}"
        );
    }
}

#[test]
fn an_invalid_config_still_fails_with_its_problems() {
    // The exit status of a negative answer is unchanged by the output path.
    let dir = std::env::temp_dir().join(crate::helpers::unique("plumbline-cli"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[sources.stripe]\nkind = \"nope\"\n").expect("write");
    let out = config_check(&file, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown variant `nope`"),
        "{out:?}"
    );
}

/// `plumbline config check` on `file` with `extra` options.
fn config_check(file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(["config", "check"])
        .args(extra)
        .arg(file)
        .output()
        .expect("run plumbline")
}

/// `plumbline config check --json` on `file` with `extra` options: its report, once it has
/// exited 0 (a warning is no failure).
fn config_check_report(file: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out = config_check(file, &[&["--json"], extra].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning is no failure: {out:?}"
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn config_check_warns_of_a_secret_its_function_could_not_read() {
    // The bundled file with the ERP's signing secret moved out of the targets/ folder: valid,
    // but deployed with the template, delivery would be refused the parameter at cold start.
    let bundled = std::fs::read_to_string(crate::helpers::repo_path("infra/config/plumbline.toml"))
        .expect("the bundled configuration");
    let moved = bundled.replace(
        "ssm:/plumbline/targets/erp-signing",
        "ssm:/plumbline/erp-signing",
    );
    assert_ne!(moved, bundled, "the bundled file names the ERP's parameter");
    let dir = std::env::temp_dir().join(crate::helpers::unique("plumbline-cli"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("moved.toml");
    std::fs::write(&file, moved).expect("write");
    let report = config_check_report(&file, &[]);
    assert_eq!(report["valid"], true);
    let warnings = report["warnings"].as_array().expect("warnings");
    // The bundled file gives Stripe no API key (see below); the moved secret is the other one.
    assert_eq!(warnings.len(), 2, "{report}");
    assert_eq!(warnings[1]["key"], "targets.erp.secret");
    assert!(
        warnings[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not under /plumbline/targets/")),
        "{report}"
    );

    // Deployed with another SecretsPrefix, none of the bundled file's parameters is readable.
    let report = config_check_report(
        &crate::helpers::repo_path("infra/config/plumbline.toml"),
        &["--secrets-prefix", "acme"],
    );
    let keys: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "sources.stripe.api_key",
            "sources.site.secrets[0]",
            "sources.stripe.secrets[0]",
            "targets.erp.secret"
        ],
        "{report}"
    );

    // The same prefix, read from the SAM configuration the stack deploys with.
    let samconfig = dir.join("samconfig.toml");
    std::fs::write(
        &samconfig,
        "version = 0.1\n[default.deploy.parameters]\nparameter_overrides = \"Architecture=arm64\"\n\
         [acme.deploy.parameters]\nparameter_overrides = \"Environment=prod SecretsPrefix=acme\"\n",
    )
    .expect("write");
    let bundled = crate::helpers::repo_path("infra/config/plumbline.toml");
    let samconfig_arg = samconfig.to_str().expect("utf8 path");
    let warned = |extra: &[&str]| -> Vec<String> {
        let report = config_check_report(&bundled, extra);
        report["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .filter_map(|w| w["key"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        warned(&["--samconfig", samconfig_arg, "--config-env", "acme"]),
        keys
    );
    // Without an API key for Stripe, reconciliation cannot list its events: the one warning
    // the bundled file keeps, until a deployment adds the key (README, "Deploy to AWS").
    let api_key_only = ["sources.stripe.api_key"];
    assert_eq!(warned(&["--samconfig", samconfig_arg]), api_key_only);
    // The repository's own environments keep the template's default prefix.
    let repo_samconfig = crate::helpers::repo_path("samconfig.toml");
    for env in ["default", "prod"] {
        let args = [
            "--samconfig",
            repo_samconfig.to_str().expect("utf8 path"),
            "--config-env",
            env,
        ];
        assert_eq!(warned(&args), api_key_only, "{env}");
    }
    // An environment the file does not have is an error, not a silent default.
    let out = config_check(
        &bundled,
        &["--samconfig", samconfig_arg, "--config-env", "qa"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no environment [qa]"),
        "{out:?}"
    );
}

/// With `--samconfig`, `config check` also judges the stack's own parameters together:
/// `ReconcileMissingAlarm` pages when a whole period of `ReconcileMissingAlarmSeconds` saw no
/// run, so the period must span two of `ReconcileSchedule`'s. Where the environment sets
/// neither, the template's defaults apply, and the command's copy of them is held to the
/// template's at the boundary each one sets for the other.
#[test]
fn config_check_warns_when_the_missing_run_alarm_would_page_between_runs() {
    let doc = crate::helpers::template();
    let schedule = doc["Parameters"]["ReconcileSchedule"]["Default"]
        .as_str()
        .expect("a default schedule")
        .to_owned();
    let period = doc["Parameters"]["ReconcileMissingAlarmSeconds"]["Default"]
        .as_u64()
        .expect("a default period");
    let minutes: u64 = schedule
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(" minutes)"))
        .and_then(|n| n.parse().ok())
        .expect("rate(N minutes)");

    let dir = std::env::temp_dir().join(crate::helpers::unique("plumbline-cli"));
    std::fs::create_dir_all(&dir).expect("dir");
    let samconfig = dir.join("samconfig.toml");
    let bundled = crate::helpers::repo_path("infra/config/plumbline.toml");
    let warned = |overrides: &str| -> Vec<String> {
        std::fs::write(
            &samconfig,
            format!("version = 0.1\n[default.deploy.parameters]\nparameter_overrides = \"{overrides}\"\n"),
        )
        .expect("write");
        let report = config_check_report(
            &bundled,
            &["--samconfig", samconfig.to_str().expect("utf8 path")],
        );
        report["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .filter(|w| w["key"] == "ReconcileMissingAlarmSeconds")
            .map(|w| w["reason"].as_str().expect("a reason").to_owned())
            .collect()
    };

    assert_eq!(
        warned("Architecture=arm64"),
        Vec::<String>::new(),
        "the defaults agree"
    );
    assert_eq!(
        warned(&format!(
            "ReconcileSchedule='{schedule}' ReconcileMissingAlarmSeconds={period}"
        )),
        Vec::<String>::new()
    );
    // The default period against slower schedules: two runs fill it, then one minute more.
    let slowest = period / 120;
    assert_eq!(
        warned(&format!("ReconcileSchedule='rate({slowest} minutes)'")),
        Vec::<String>::new()
    );
    let slower = warned(&format!(
        "ReconcileSchedule='rate({} minutes)'",
        slowest + 1
    ));
    assert_eq!(slower.len(), 1, "{slower:?}");
    assert!(
        slower[0].contains(&format!("at least {}", 2 * (slowest + 1) * 60)),
        "{slower:?}"
    );
    // The default schedule against shorter periods: two of its runs, then a minute less.
    let shortest = 2 * minutes * 60;
    assert_eq!(
        warned(&format!("ReconcileMissingAlarmSeconds={shortest}")),
        Vec::<String>::new()
    );
    let shorter = warned(&format!("ReconcileMissingAlarmSeconds={}", shortest - 60));
    assert_eq!(shorter.len(), 1, "{shorter:?}");
    assert!(
        shorter[0].contains(&format!(
            "{} is shorter than two runs of ReconcileSchedule {schedule}, so \
             ReconcileMissingAlarm would page",
            shortest - 60
        )),
        "{shorter:?}"
    );
    // A cron schedule is not judged, and the warning says so.
    let cron = warned("ReconcileSchedule='cron(0 * * * ? *)'");
    assert!(
        cron.len() == 1 && cron[0].contains("not a rate expression"),
        "{cron:?}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `plumbline receive`, the local target of the README's walkthrough: it answers with the
/// status asked for and prints each delivery with the verdict on its signature.
#[tokio::test]
async fn receive_prints_each_delivery_with_its_signature_verdict() {
    use plumbline::sources::SourceKind;
    use plumbline::sources::sign::{Envelope, sign};
    use tokio::io::{AsyncBufReadExt, BufReader};

    const SECRET: &str = "whsec_cGx1bWJsaW5lLXJlY2VpdmUtdGVzdA==";
    let mut child = tokio::process::Command::new(binary())
        .args(["receive", "--listen", "127.0.0.1:0", "--fail-with", "503"])
        .args(["--secret", SECRET])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn plumbline receive");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("read").expect("a line");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    assert!(first.ends_with("(answering 503)"), "{first}");

    let body = br#"{"event":{"type":"payment.succeeded"},"entity":{"state":"succeeded"}}"#;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let request = |secret: &str, timestamp: i64, key: &str| {
        let signed = sign(
            SourceKind::StandardWebhooks,
            secret,
            Envelope {
                event_id: key,
                timestamp,
                topic: None,
            },
            body,
        )
        .expect("signs");
        let mut builder = crate::helpers::http()
            .post(&url)
            .header("idempotency-key", key)
            .body(signed.body);
        for (name, value) in signed.headers {
            builder = builder.header(name, value);
        }
        builder
    };
    let other = "whsec_b3RoZXItc2VjcmV0LW5vdC10aGUtdGFyZ2V0cw==";
    for (secret, timestamp, key, verdict) in [
        (SECRET, now, "stripe:evt_good", "signature valid"),
        (other, now, "stripe:evt_forged", "signature bad_signature"),
        (
            SECRET,
            now - 3_600,
            "stripe:evt_stale",
            "signature stale_timestamp",
        ),
    ] {
        let answer = request(secret, timestamp, key).send().await.expect("send");
        assert_eq!(answer.status().as_u16(), 503, "{key}");
        let line = lines.next_line().await.expect("read").expect("a line");
        assert!(line.starts_with(key), "{line}");
        assert!(line.contains("payment.succeeded"), "{line}");
        assert!(line.contains("entity state succeeded"), "{line}");
        assert!(line.ends_with(verdict), "{key}: {line}");
    }
}

/// `send --list` names each sample by the source name `send` takes, not only its kind, and
/// `send <source> --list` keeps to that source.
#[test]
fn send_lists_samples_by_the_source_name_it_takes() {
    let run = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, all, _) = run(&["send", "--list"]);
    assert_eq!(code, Some(0));
    let rows: Vec<Vec<&str>> = all
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r[..3] == ["site", "standard-webhooks", "lead.submitted"]),
        "{all}"
    );
    assert!(
        rows.iter()
            .any(|r| r[..3] == ["stripe", "stripe", "lifecycle"]),
        "{all}"
    );
    let (_, site, _) = run(&["send", "site", "--list"]);
    let sources: std::collections::BTreeSet<&str> = site
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(sources.into_iter().collect::<Vec<_>>(), ["site"], "{site}");

    let (code, _, err) = run(&["send", "standard-webhooks", "lead.submitted"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("(sources: adyen, paddle, shopify, site, stripe)"),
        "{err}"
    );
}
