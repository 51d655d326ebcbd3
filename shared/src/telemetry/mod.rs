//! Logs (tracing, JSON in Lambda, redacted) and metrics (CloudWatch Embedded Metric Format on
//! stdout: no API call, no added latency).

mod json_line;
mod known;
mod redact;

pub use known::redact_value;
pub use redact::{Redacting, redact};

use std::io::Write;
use std::sync::{Arc, Mutex};

/// One metric data point with its dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

impl Metric {
    pub fn count(name: &'static str, dimensions: Vec<(&'static str, String)>) -> Self {
        Self {
            name,
            dimensions,
            value: 1.0,
            unit: Unit::Count,
        }
    }

    /// The EMF document for this point, stamped with `timestamp_ms`. Besides its full
    /// dimension set it is published rolled up (without its first dimension, and with none), so
    /// alarms can watch totals across sources or targets that the template cannot name.
    pub fn to_emf(&self, namespace: &str, timestamp_ms: i64) -> serde_json::Value {
        let dims: Vec<&str> = self.dimensions.iter().map(|(k, _)| *k).collect();
        let mut sets = vec![dims.clone()];
        if dims.len() > 1 {
            sets.push(dims[1..].to_vec());
        }
        if !dims.is_empty() {
            sets.push(Vec::new());
        }
        let mut doc = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": sets,
                    "Metrics": [{ "Name": self.name, "Unit": self.unit.as_str() }],
                }],
            },
            self.name: self.value,
        });
        for (k, v) in &self.dimensions {
            doc[*k] = serde_json::Value::String(v.clone());
        }
        doc
    }
}

/// Where metrics go.
pub trait Metrics: Send + Sync {
    fn emit(&self, metric: Metric);
}

/// Writes each metric as one EMF line on stdout, which Lambda ships to CloudWatch.
#[derive(Debug, Clone)]
pub struct EmfMetrics {
    namespace: String,
}

impl EmfMetrics {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }
}

impl Metrics for EmfMetrics {
    fn emit(&self, metric: Metric) {
        let now = time::OffsetDateTime::now_utc();
        let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let line = metric.to_emf(&self.namespace, ms).to_string();
        // One write per line so concurrent writers never interleave inside a document.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

/// Keeps every metric in memory, for tests and the local stack's status page.
#[derive(Debug, Clone, Default)]
pub struct RecordingMetrics(Arc<Mutex<Vec<Metric>>>);

impl RecordingMetrics {
    pub fn all(&self) -> Vec<Metric> {
        self.0.lock().expect("metrics lock").clone()
    }

    /// How many `name` counts were emitted with dimensions including every pair in `having`.
    pub fn count(&self, name: &str, having: &[(&str, &str)]) -> u64 {
        let matches = |m: &&Metric| {
            m.name == name
                && m.unit == Unit::Count
                && having
                    .iter()
                    .all(|(k, v)| m.dimensions.iter().any(|(mk, mv)| mk == k && mv == v))
        };
        // Counts are whole, non-negative numbers by construction.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.all()
            .iter()
            .filter(matches)
            .map(|m| m.value as u64)
            .sum()
    }
}

impl Metrics for RecordingMetrics {
    fn emit(&self, metric: Metric) {
        self.0.lock().expect("metrics lock").push(metric);
    }
}

impl<T: Metrics> Metrics for Arc<T> {
    fn emit(&self, metric: Metric) {
        (**self).emit(metric);
    }
}

/// Installs the tracing subscriber for a Lambda function: JSON lines unless
/// `AWS_LAMBDA_LOG_FORMAT=Text`; level from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, else info;
/// every line redacted.
pub fn init_lambda_tracing() {
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
    let level = lambda_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let subscriber = lambda_subscriber(&level, text, Redacting(std::io::stdout));
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(lambda_level) = lambda_level.filter(|l| lambda_drops_metrics(l, text)) {
        tracing::error!(
            application_log_level = %lambda_level,
            "Lambda's application log level is above INFO: it drops the metric lines (they carry \
             no level, which Lambda reads as INFO), so the dashboard and the alarms see nothing; \
             set it to INFO"
        );
    }
}

/// Whether Lambda, filtering JSON logs at `lambda_level` (its `ApplicationLogLevel`), drops the
/// EMF lines: they have no `level` field, and Lambda gives such a line the level INFO. In text
/// format Lambda filters nothing.
pub fn lambda_drops_metrics(lambda_level: &str, text: bool) -> bool {
    let level = lambda_level.trim().to_ascii_uppercase();
    !text && matches!(level.as_str(), "WARN" | "ERROR" | "FATAL")
}

/// Runs a function's start-up and its runtime loop. An error that ends them is logged once, as
/// a structured line that goes through the same redaction as every other, with its causes
/// (`{:#}`), and the process exits with failure; returned from `main` instead, Rust would
/// print its `Debug` form to standard error.
pub async fn until_stopped(
    function: impl Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
) -> std::process::ExitCode {
    match function.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "the function stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The functions' subscriber, writing to `writer` (tests capture it).
pub fn lambda_subscriber<W>(
    level: &str,
    text: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    let filter = log_filter(level);
    // The formatter's own level (info unless told) would drop what the filter lets through
    // above it: told the filter's most verbose level, it leaves the choice to the filter, and
    // the process's maximum level stays that one (callsites past it cost nothing).
    let most = Layer::<tracing_subscriber::Registry>::max_level_hint(&filter)
        .unwrap_or(tracing_subscriber::filter::LevelFilter::TRACE);
    let builder = tracing_subscriber::fmt()
        .with_max_level(most)
        .with_target(false)
        .with_writer(writer);
    if text {
        // Lambda stamps each text line itself.
        Box::new(
            builder
                .without_time()
                .with_ansi(false)
                .finish()
                .with(filter),
        )
    } else {
        // An RFC 3339 `timestamp`: Lambda's JSON log filtering counts a line without a valid
        // one as INFO, whatever its `level`.
        Box::new(
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(json_line::JsonLine)
                .finish()
                .with(filter),
        )
    }
}

/// The most verbose level a crate other than plumbline's own logs at, whatever is asked: at
/// trace the AWS SDK writes whole requests and responses (`transmitting request`, `read HTTP
/// response body`, the parsed output), the events' personal data with them, which no redaction
/// of a line can find. Their debug lines say what was called and how it went, not what it
/// carried.
const DEPENDENCIES_AT_MOST: tracing_subscriber::filter::LevelFilter =
    tracing_subscriber::filter::LevelFilter::DEBUG;

/// Passes plumbline's own lines at any level and other crates' at debug at most: the functions'
/// filter asked for trace. Layered beside another filter (the command line's `RUST_LOG`), it
/// holds the dependencies' trace lines back as the functions' filter does.
#[must_use]
pub fn dependency_cap() -> tracing_subscriber::filter::Targets {
    log_filter("trace")
}

/// What a function logs: a level name in any case (`AWS_LAMBDA_LOG_LEVEL`; Lambda's `FATAL` is
/// read as error), or `target=level` directives beside one (`RUST_LOG`, e.g.
/// `warn,plumbline=debug`); anything unreadable is info; other crates than plumbline's at most
/// [`DEPENDENCIES_AT_MOST`]. Targets, not an `EnvFilter`: its span and field directives are
/// not needed here, and its regex engine is about 55 KB of each bootstrap (`sam build`).
fn log_filter(level: &str) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let level = level.trim().to_lowercase();
    let level = if level == "fatal" { "error" } else { &level };
    // A lone word that is no level would read as a target name, and silence every other one.
    let directives = level.contains('=') || level.contains(',');
    let asked = if directives {
        level
            .parse()
            .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
    } else {
        Targets::new().with_default(level.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO))
    };
    // A target names its crate first: `plumbline` also covers `plumbline_delivery`.
    let own = |target: &str| target.starts_with("plumbline");
    let default = asked.default_level().unwrap_or(LevelFilter::OFF);
    let mut filter = Targets::new().with_default(default.min(DEPENDENCIES_AT_MOST));
    if default > DEPENDENCIES_AT_MOST && !asked.iter().any(|(target, _)| own(target)) {
        filter = filter.with_target("plumbline", default);
    }
    filter.with_targets(asked.iter().map(|(target, at)| {
        let at = if own(target) {
            at
        } else {
            at.min(DEPENDENCIES_AT_MOST)
        };
        (target.to_owned(), at)
    }))
}

/// An error with its causes, `outer: inner: root`, for a log line that should say why (a full
/// disk, a throttled table), not only what failed.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_level_is_read_from_lambdas_names_and_rust_log_directives() {
        use tracing::Level;
        let at = |filter: &str, target: &str, level: Level| {
            log_filter(filter).would_enable(target, &level)
        };
        assert!(at("DEBUG", "plumbline::delivery", Level::DEBUG));
        assert!(!at("DEBUG", "plumbline::delivery", Level::TRACE));
        assert!(!at("WARN", "plumbline", Level::INFO));
        assert!(
            at("FATAL", "plumbline", Level::ERROR),
            "Lambda's FATAL is error"
        );
        assert!(!at("FATAL", "plumbline", Level::WARN));
        assert!(at(
            "warn,plumbline=debug",
            "plumbline::ingress",
            Level::DEBUG
        ));
        assert!(!at(
            "warn,plumbline=debug",
            "aws_smithy_runtime",
            Level::INFO
        ));
        assert!(at("loud", "plumbline", Level::INFO), "unreadable: info");
        assert!(!at("loud", "plumbline", Level::DEBUG));
        // Trace is plumbline's own; the SDK's and the HTTP clients' stop at debug.
        assert!(at("TRACE", "plumbline::delivery", Level::TRACE));
        assert!(at("TRACE", "plumbline_ingress", Level::TRACE));
        assert!(at("TRACE", "aws_smithy_runtime::client", Level::DEBUG));
        assert!(!at("TRACE", "aws_smithy_runtime::client", Level::TRACE));
        assert!(!at(
            "info,aws_smithy_runtime=trace",
            "aws_smithy_runtime",
            Level::TRACE
        ));
        assert!(at(
            "info,aws_smithy_runtime=trace",
            "aws_smithy_runtime",
            Level::DEBUG
        ));
        assert!(!at(
            "info,aws_smithy_runtime=trace",
            "plumbline",
            Level::DEBUG
        ));
        assert!(at(
            "debug,plumbline=trace",
            "plumbline::ledger",
            Level::TRACE
        ));
        assert!(!at(
            "trace,plumbline=info",
            "plumbline::ledger",
            Level::DEBUG
        ));
        assert!(!at("trace,plumbline=info", "hyper_util", Level::TRACE));
    }

    /// What the functions' subscriber writes, at `level`, of a debug and an info line.
    fn written_at(level: &str) -> String {
        written(level, true)
    }

    /// What the functions' subscriber writes, at `level` and in text or JSON, of a debug and an
    /// info line.
    fn written(level: &str, text: bool) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = lambda_subscriber(level, text, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("a debug line");
            tracing::info!("an info line");
        });
        lines.text()
    }

    /// What a subscriber wrote, kept for the test to read.
    #[derive(Clone, Default)]
    pub(super) struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Lines {
        pub(super) fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lines").clone()).expect("text")
        }
    }

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_functions_write_every_line_their_level_lets_through_and_no_other() {
        for (level, debug, info) in [
            ("DEBUG", true, true),
            ("info", false, true),
            ("WARN", false, false),
            ("warn,plumbline=debug", true, true),
            ("info,aws_smithy_runtime=debug", false, true),
        ] {
            let written = written_at(level);
            assert_eq!(
                written.contains("a debug line"),
                debug,
                "{level}: {written:?}"
            );
            assert_eq!(
                written.contains("an info line"),
                info,
                "{level}: {written:?}"
            );
        }
    }

    #[test]
    fn json_lines_carry_their_level_and_an_rfc_3339_timestamp_and_text_lines_no_time() {
        let json = written("debug", false);
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{json}");
        for (line, level) in lines.iter().zip(["DEBUG", "INFO"]) {
            assert_eq!(line["level"], level, "{line}");
            let stamp = line["timestamp"].as_str().expect("a timestamp");
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{stamp}: {e}"));
        }
        let text = written("debug", true);
        assert!(
            text.lines()
                .all(|l| l.starts_with("DEBUG") || l.starts_with(" INFO")),
            "{text}"
        );
    }

    #[test]
    fn a_lambda_level_above_info_is_known_to_drop_the_metric_lines() {
        for level in ["WARN", "ERROR", "FATAL", "warn"] {
            assert!(lambda_drops_metrics(level, false), "{level}");
            assert!(
                !lambda_drops_metrics(level, true),
                "text: Lambda filters nothing"
            );
        }
        for level in ["INFO", "DEBUG", "TRACE", "info"] {
            assert!(!lambda_drops_metrics(level, false), "{level}");
        }
    }

    #[test]
    fn the_dependency_cap_passes_plumblines_lines_and_holds_the_others_at_debug() {
        use tracing::Level;
        let cap = dependency_cap();
        assert!(cap.would_enable("plumbline::dev", &Level::TRACE));
        assert!(cap.would_enable("plumbline_cli", &Level::TRACE));
        assert!(cap.would_enable("hyper_util::client", &Level::DEBUG));
        assert!(!cap.would_enable("hyper_util::client", &Level::TRACE));
        assert!(!cap.would_enable("aws_smithy_runtime", &Level::TRACE));
    }

    #[test]
    fn a_chain_names_every_cause() {
        let root = std::io::Error::other("database or disk is full");
        let err = crate::ingress::IngressError::Store(crate::ports::StoreError::Unavailable(
            Box::new(root),
        ));
        assert_eq!(
            Chain(&err).to_string(),
            "the event store failed: the store is unavailable: database or disk is full"
        );
    }

    #[test]
    fn emf_document_names_its_dimensions_and_value() {
        let m = Metric::count(
            "IngressEvents",
            vec![("Source", "stripe".into()), ("Outcome", "accepted".into())],
        );
        let doc = m.to_emf("Plumbline", 1_700_000_000_000);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["Source", "Outcome"])
        );
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "IngressEvents"
        );
        assert_eq!(doc["Source"], "stripe");
        assert_eq!(doc["IngressEvents"], 1.0);
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000_i64);
    }

    #[test]
    fn recording_sums_by_dimension() {
        let r = RecordingMetrics::default();
        r.emit(Metric::count("X", vec![("Source", "a".into())]));
        r.emit(Metric::count("X", vec![("Source", "b".into())]));
        r.emit(Metric::count("X", vec![("Source", "a".into())]));
        assert_eq!(r.count("X", &[("Source", "a")]), 2);
        assert_eq!(r.count("X", &[]), 3);
    }
}

/// Counts per metric and dimension set, for the local stack: bounded by the dimensions' few
/// values, unlike a list of every point.
#[derive(Debug, Clone, Default)]
pub struct Counters(Arc<Mutex<std::collections::BTreeMap<CounterKey, f64>>>);

/// A metric's name and its dimensions.
pub type CounterKey = (String, Vec<(String, String)>);

impl Counters {
    /// The sum of `name` over the dimension sets including every pair in `having`.
    pub fn total(&self, name: &str, having: &[(&str, &str)]) -> f64 {
        self.0
            .lock()
            .expect("counters lock")
            .iter()
            .filter(|((n, dims), _)| {
                n == name
                    && having
                        .iter()
                        .all(|(k, v)| dims.iter().any(|(dk, dv)| dk == k && dv == v))
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

impl Metrics for Counters {
    fn emit(&self, metric: Metric) {
        if metric.unit != Unit::Count {
            return;
        }
        let dims = metric
            .dimensions
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        *self
            .0
            .lock()
            .expect("counters lock")
            .entry((metric.name.to_owned(), dims))
            .or_insert(0.0) += metric.value;
    }
}
