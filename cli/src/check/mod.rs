//! `plumbline config check`: the file's problems and warnings, the stack's parameters it would
//! be deployed with, and with `--aws` what each function would make of the secrets it fetches
//! at cold start, and whether the deployment's table, queues and functions fit it.

use std::path::{Path, PathBuf};

use plumbline::config::{Config, ConfigError, ConfigProblem};
use serde_json::json;

use crate::{out, samconfig};

mod aws;
mod functions;

use aws::Remote;

/// The template's default `SecretsPrefix`.
const DEFAULT_SECRETS_PREFIX: &str = "plumbline";

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The configuration file (TOML).
    file: PathBuf,
    /// The stack's SecretsPrefix parameter: remote secrets outside its folders, where the
    /// template's roles would refuse them, are warned of.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_SECRETS_PREFIX)]
    secrets_prefix: String,
    /// Read SecretsPrefix from the parameter_overrides this SAM configuration deploys with
    /// (the template's default when it sets none), instead of --secrets-prefix.
    #[arg(long, value_name = "FILE", conflicts_with = "secrets_prefix")]
    samconfig: Option<PathBuf>,
    /// The environment of --samconfig, as `sam deploy --config-env` names it.
    #[arg(
        long,
        value_name = "ENV",
        default_value = "default",
        requires = "samconfig"
    )]
    config_env: String,
    /// Also fetch every secret the functions would fetch at cold start (SSM, Secrets
    /// Manager; the AWS SDK's usual environment) and build what each builds from them:
    /// a missing or unusable one is a problem, named by its key, never printed. With
    /// PLUMBLINE_TABLE, PLUMBLINE_QUEUE_URL and PLUMBLINE_DLQ_URL set, also check that
    /// table's key, indexes and time to live, and that queue's redrive to that one; with
    /// PLUMBLINE_INGRESS_FUNCTION, PLUMBLINE_DELIVERY_FUNCTION and
    /// PLUMBLINE_RECONCILE_FUNCTION set, each function's configuration in Lambda.
    /// PLUMBLINE_STACK, naming the deployed stack, gives all six from its outputs.
    #[arg(long)]
    aws: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<bool> {
    let (prefix, stack_warnings) = match &args.samconfig {
        Some(samconfig) => stack_parameters(samconfig, &args.config_env)?,
        None => (args.secrets_prefix.clone(), Vec::new()),
    };
    let result = Config::load(&args.file);
    let remote = match (&result, args.aws) {
        (Ok(config), true) => Some(Remote::check(config).await?),
        _ => None,
    };
    report(
        &args.file,
        &result,
        &prefix,
        &stack_warnings,
        remote.as_ref(),
        args.json,
    )
}

/// What `config check` reads from the SAM configuration a stack deploys with: its
/// `SecretsPrefix`, and a warning on the stack's own parameters when they disagree.
fn stack_parameters(samconfig: &Path, env: &str) -> anyhow::Result<(String, Vec<ConfigProblem>)> {
    let overrides = samconfig::Overrides::read(samconfig, env)?;
    let prefix = overrides
        .get("SecretsPrefix")
        .unwrap_or(DEFAULT_SECRETS_PREFIX)
        .to_owned();
    let warnings = overrides
        .reconcile_alarm_warning()?
        .map(|reason| ConfigProblem {
            key: "ReconcileMissingAlarmSeconds".to_owned(),
            reason,
            line: None,
        })
        .into_iter()
        .collect();
    Ok((prefix, warnings))
}

fn report(
    file: &Path,
    result: &Result<Config, ConfigError>,
    secrets_prefix: &str,
    stack_warnings: &[ConfigProblem],
    remote: Option<&Remote>,
    json: bool,
) -> anyhow::Result<bool> {
    let problems = result
        .as_ref()
        .err()
        .map(|e| e.problems.clone())
        .unwrap_or_default();
    let warnings = result
        .as_ref()
        .map(|c| {
            [
                c.warnings.clone(),
                c.check_warnings(secrets_prefix),
                stack_warnings.to_vec(),
            ]
            .concat()
        })
        .unwrap_or_default();
    let passed = problems.is_empty() && remote.is_none_or(Remote::passed);
    if json {
        let as_json = |list: &[ConfigProblem]| -> Vec<serde_json::Value> {
            list.iter()
                .map(|p| json!({ "key": p.key, "reason": p.reason, "line": p.line }))
                .collect()
        };
        let mut doc = json!({
            "file": file.display().to_string(),
            "valid": problems.is_empty(),
            "problems": as_json(&problems),
            "warnings": as_json(&warnings),
        });
        if let Some(remote) = remote {
            doc["aws"] = json!({
                "passed": remote.passed(),
                "functions": remote.functions.iter().map(|f| json!({
                    "function": f.function,
                    "fetched": f.fetched,
                    "problems": as_json(&f.problems),
                })).collect::<Vec<_>>(),
                "resources": remote.resources.iter().map(|r| json!({
                    "resource": r.what,
                    "problems": as_json(&r.problems),
                })).collect::<Vec<_>>(),
                "not_checked": as_json(&remote.unchecked),
            });
        }
        out::outln!("{doc}")?;
        return Ok(passed);
    }
    let Ok(config) = result else {
        for p in &problems {
            eprintln!("{}: {p}", file.display());
        }
        return Ok(false);
    };
    for w in &warnings {
        eprintln!("{}: warning: {w}", file.display());
    }
    out::outln!(
        "{}: valid ({} sources, {} targets, {} routes)",
        file.display(),
        config.sources.len(),
        config.targets.len(),
        config.routes.len()
    )?;
    let Some(remote) = remote else {
        return Ok(passed);
    };
    for f in &remote.functions {
        if f.problems.is_empty() {
            match f.fetched {
                0 => out::outln!("{}: nothing to fetch from AWS", f.function)?,
                1 => out::outln!("{}: 1 secret fetched from AWS, usable", f.function)?,
                n => out::outln!("{}: {n} secrets fetched from AWS, usable", f.function)?,
            }
        }
        for p in &f.problems {
            eprintln!("{}: {p}", f.function);
        }
    }
    for r in &remote.resources {
        if r.problems.is_empty() {
            out::outln!("{}: {}", r.what, r.fits)?;
        }
        for p in &r.problems {
            eprintln!("{}: {p}", r.what);
        }
    }
    for u in &remote.unchecked {
        eprintln!("{}: note: {u}", file.display());
    }
    Ok(passed)
}
