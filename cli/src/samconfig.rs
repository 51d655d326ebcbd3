//! The parameters a SAM configuration file deploys a stack with, so that `config check` can
//! judge a configuration against the stack it will run in rather than the template's defaults.

use std::path::Path;

use anyhow::{Context, bail};

/// The template's defaults for the parameters `config check` judges together.
const DEFAULT_RECONCILE_SCHEDULE: &str = "rate(5 minutes)";
const DEFAULT_RECONCILE_MISSING_ALARM_SECONDS: u64 = 1800;

/// The template parameters `sam deploy --config-env ENV` overrides, read once from
/// `parameter_overrides` under `[ENV.deploy.parameters]`, else `[ENV.global.parameters]` (where
/// SAM looks for them).
pub struct Overrides {
    /// Where they were read: `FILE [ENV]`.
    origin: String,
    pairs: Vec<(String, String)>,
}

impl Overrides {
    pub fn read(file: &Path, env: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
        let Some(environment) = doc.get(env).and_then(toml::Value::as_table) else {
            bail!("{} has no environment [{env}]", file.display());
        };
        let given = ["deploy", "global"].into_iter().find_map(|command| {
            environment
                .get(command)?
                .get("parameters")?
                .get("parameter_overrides")
        });
        let pairs = match given {
            None => Vec::new(),
            Some(toml::Value::String(s)) => split(s)?,
            Some(toml::Value::Array(items)) => {
                let mut pairs = Vec::new();
                for item in items {
                    let Some(s) = item.as_str() else {
                        bail!("{env}: parameter_overrides holds a value that is not a string");
                    };
                    pairs.extend(split(s)?);
                }
                pairs
            }
            Some(_) => bail!("{env}: parameter_overrides is neither a string nor a list"),
        };
        Ok(Self {
            origin: format!("{} [{env}]", file.display()),
            pairs,
        })
    }

    /// The value given to the parameter `name` (the last, as SAM takes it); `None` when it is
    /// not overridden, so the template's default applies.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether `ReconcileMissingAlarm` can tell a stopped schedule from the gap between two
    /// runs, with these values (the template's defaults where none is given): the alarm pages
    /// when a whole period of `ReconcileMissingAlarmSeconds` saw no invocation, so a period
    /// shorter than two of the schedule's intervals pages whenever a run starts late or the
    /// period's bounds fall between runs. `None` when it can.
    pub fn reconcile_alarm_warning(&self) -> anyhow::Result<Option<String>> {
        let schedule = self
            .get("ReconcileSchedule")
            .unwrap_or(DEFAULT_RECONCILE_SCHEDULE);
        let seconds = match self.get("ReconcileMissingAlarmSeconds") {
            Some(value) => value.parse().with_context(|| {
                format!(
                    "{}: ReconcileMissingAlarmSeconds={value} is not a number",
                    self.origin
                )
            })?,
            None => DEFAULT_RECONCILE_MISSING_ALARM_SECONDS,
        };
        Ok(alarm_covers(schedule, seconds)
            .err()
            .map(|why| format!("{why} ({})", self.origin)))
    }
}

/// The longest period a CloudWatch alarm of one evaluation period may have.
const ALARM_PERIOD_MAX: u64 = 86_400;

/// `Err` says why an alarm period of `seconds` does not span two runs of `schedule`.
fn alarm_covers(schedule: &str, seconds: u64) -> Result<(), String> {
    let Some(interval) = rate_seconds(schedule) else {
        return Err(format!(
            "ReconcileSchedule {schedule} is not a rate expression, so its interval is not \
             checked: make {seconds} span at least two of its runs"
        ));
    };
    let (two, three) = (interval.saturating_mul(2), interval.saturating_mul(3));
    if seconds >= two {
        return Ok(());
    }
    if two > ALARM_PERIOD_MAX {
        return Err(format!(
            "ReconcileSchedule {schedule} runs less often than every 12 hours: \
             ReconcileMissingAlarm's period (at most {ALARM_PERIOD_MAX} s) cannot span two runs \
             and would page between them; run reconciliation more often"
        ));
    }
    let three = if three <= ALARM_PERIOD_MAX {
        format!(" ({three} spans three)")
    } else {
        String::new()
    };
    Err(format!(
        "{seconds} is shorter than two runs of ReconcileSchedule {schedule}, so \
         ReconcileMissingAlarm would page between runs: set it to at least {two}{three}"
    ))
}

/// The interval of an EventBridge `rate(N unit)` expression, in seconds.
fn rate_seconds(expression: &str) -> Option<u64> {
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (count, unit) = inner.trim().split_once(' ')?;
    let count: u64 = count.parse().ok()?;
    let unit = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3_600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    count.checked_mul(unit).filter(|&seconds| seconds > 0)
}

/// `Key=Value` pairs as SAM reads them: words split as a shell does (a value in double or single
/// quotes may hold spaces), and the CloudFormation form `ParameterKey=K,ParameterValue=V` too.
fn split(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let Some(words) = shlex::split(text) else {
        bail!("parameter_overrides has an unclosed quote: {text:?}");
    };
    words
        .into_iter()
        .map(|w| {
            if let Some(rest) = w.strip_prefix("ParameterKey=")
                && let Some((key, value)) = rest.split_once(",ParameterValue=")
            {
                return Ok((key.to_owned(), value.to_owned()));
            }
            w.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("parameter_overrides: {w:?} is not Key=Value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        split(text).expect("splits")
    }

    #[test]
    fn overrides_split_as_sam_reads_them() {
        let own = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            pairs("Architecture=arm64  MaxReceiveCount=8"),
            [own("Architecture", "arm64"), own("MaxReceiveCount", "8")]
        );
        assert_eq!(
            pairs(r#"AlarmEmail="ops team@example.com" SecretsPrefix='acme/prod' Empty="""#),
            [
                own("AlarmEmail", "ops team@example.com"),
                own("SecretsPrefix", "acme/prod"),
                own("Empty", "")
            ]
        );
        assert_eq!(
            pairs("ParameterKey=SecretsPrefix,ParameterValue=acme"),
            [own("SecretsPrefix", "acme")]
        );
        assert!(split("Architecture").is_err());
        assert!(split("SecretsPrefix=\"acme").is_err());
    }

    #[test]
    fn rate_expressions_are_read_in_seconds() {
        assert_eq!(rate_seconds("rate(5 minutes)"), Some(300));
        assert_eq!(rate_seconds("rate(1 minute)"), Some(60));
        assert_eq!(rate_seconds("rate(2 hours)"), Some(7_200));
        assert_eq!(rate_seconds("rate(1 day)"), Some(86_400));
        assert_eq!(rate_seconds("rate(0 minutes)"), None);
        assert_eq!(rate_seconds("rate(5 weeks)"), None);
        assert_eq!(rate_seconds("rate(18446744073709551615 days)"), None);
        assert_eq!(rate_seconds("cron(0 * * * ? *)"), None);
    }

    #[test]
    fn the_missing_run_alarm_must_span_two_runs_of_the_schedule() {
        assert_eq!(alarm_covers("rate(5 minutes)", 1800), Ok(()));
        assert_eq!(alarm_covers("rate(15 minutes)", 1800), Ok(()));
        let late = alarm_covers("rate(20 minutes)", 1800).expect_err("under two runs");
        assert!(late.contains("at least 2400 (3600 spans three)"), "{late}");
        let hourly = alarm_covers("rate(1 hour)", 3600).expect_err("one run");
        assert!(
            hourly.contains("at least 7200 (10800 spans three)"),
            "{hourly}"
        );
        assert_eq!(alarm_covers("rate(12 hours)", 86_400), Ok(()));
        let ten = alarm_covers("rate(10 hours)", 36_000).expect_err("one run");
        assert!(ten.ends_with("at least 72000"), "{ten}");
        let daily = alarm_covers("rate(1 day)", 86_400).expect_err("beyond any period");
        assert!(daily.contains("cannot span two runs"), "{daily}");
        let cron = alarm_covers("cron(0 * * * ? *)", 1800).expect_err("not judged");
        assert!(cron.contains("not a rate expression"), "{cron}");
    }

    #[test]
    fn a_parameter_is_read_from_deploy_then_global_and_absent_means_the_default() {
        let dir = std::env::temp_dir().join(format!("plumbline-samconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("samconfig.toml");
        std::fs::write(
            &file,
            r#"version = 0.1
[default.deploy.parameters]
parameter_overrides = "Architecture=arm64 SecretsPrefix=acme"
[staging.global.parameters]
parameter_overrides = ["SecretsPrefix=stage", "Architecture=x86_64"]
[prod.deploy.parameters]
capabilities = "CAPABILITY_IAM"
"#,
        )
        .expect("write");
        let read = |env: &str| {
            Overrides::read(&file, env).map(|o| o.get("SecretsPrefix").map(str::to_owned))
        };
        assert_eq!(read("default").expect("read").as_deref(), Some("acme"));
        assert_eq!(read("staging").expect("read").as_deref(), Some("stage"));
        assert_eq!(read("prod").expect("read"), None);
        let missing = read("qa").expect_err("no such environment").to_string();
        assert!(missing.contains("no environment [qa]"), "{missing}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
