//! The functions' JSON log line: `timestamp` first (the redacting writer passes over it), then
//! `level`, the event's own fields, and `span`: the fields of every span the line was written
//! in, outermost first, an inner span's value winning over an outer one's, with the innermost
//! span's `name`. tracing-subscriber's JSON format shows either the innermost span alone, which
//! loses the event id and the Lambda request id of every line written inside a target's call,
//! or a list whose positions move with the nesting, which no Logs Insights query can name.

use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer as _};
use serde_json_borrow::Value;
use tracing::{Event, Subscriber};
use tracing_serde::AsSerde;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of the functions' JSON lines.
pub(super) struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        // Each span's fields are one JSON object the field formatter wrote; read in place,
        // borrowing their text while the spans' extensions are held.
        let spans: Vec<_> = ctx
            .event_scope()
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();
        let parsed: Vec<Value<'_>> = extensions
            .iter()
            .filter_map(|e| e.get::<FormattedFields<N>>())
            .filter_map(|fields| serde_json::from_str(&fields.fields).ok())
            .collect();
        let mut merged: Vec<(&str, &Value<'_>)> = Vec::new();
        for (key, value) in parsed.iter().filter_map(Value::iter_object).flatten() {
            match merged.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => merged.push((key, value)),
            }
        }
        let span = spans.last().map(|innermost| Span {
            fields: &merged,
            name: innermost.metadata().name(),
        });

        let mut line = Vec::with_capacity(256);
        let mut serializer = serde_json::Serializer::new(&mut line);
        let written: Result<(), serde_json::Error> = (|| {
            let mut map = serializer.serialize_map(None)?;
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", &event.metadata().level().as_serde())?;
            let mut visitor = tracing_serde::SerdeMapVisitor::new(map);
            event.record(&mut visitor);
            let mut map = visitor.take_serializer()?;
            if let Some(span) = &span {
                map.serialize_entry("span", span)?;
            }
            map.end()
        })();
        written.map_err(|_| fmt::Error)?;
        writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)?;
        writeln!(writer)
    }
}

/// The merged fields of the spans a line is in, and the innermost's name.
struct Span<'a> {
    fields: &'a [(&'a str, &'a Value<'a>)],
    name: &'static str,
}

impl Serialize for Span<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len() + 1))?;
        for (key, value) in self.fields {
            if *key != "name" {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("name", self.name)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::lambda_subscriber;
    use super::super::tests::Lines;

    fn lines_of(f: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = lambda_subscriber("info", false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, f);
        lines
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn a_line_carries_the_fields_of_every_span_it_is_in_the_inner_one_winning() {
        let lines = lines_of(|| {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _invoke = invoke.enter();
            let record = tracing::info_span!(
                "process_decoded",
                event_id = tracing::field::Empty,
                target = "outer"
            );
            let _record = record.enter();
            // Recorded on the outer span once the inner one exists: still on the line.
            let deliver = tracing::info_span!("deliver", target = "erp");
            record.record("event_id", "01EVENT");
            let _deliver = deliver.enter();
            tracing::info!(elapsed_ms = 3, "delivered");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["message"], "delivered", "{line}");
        assert_eq!(line["elapsed_ms"], 3, "{line}");
        assert_eq!(line["span"]["requestId"], "req-1", "{line}");
        assert_eq!(line["span"]["event_id"], "01EVENT", "{line}");
        assert_eq!(line["span"]["target"], "erp", "the inner span wins: {line}");
        assert_eq!(line["span"]["name"], "deliver", "{line}");
    }

    #[test]
    fn the_timestamp_comes_first_and_a_line_outside_any_span_has_none() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = lambda_subscriber("info", false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || tracing::info!(n = 1, "alone"));
        let text = lines.text();
        assert!(text.starts_with("{\"timestamp\":\""), "{text}");
        let line: Value = serde_json::from_str(&text).expect("a JSON line");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["n"], 1, "{line}");
        assert!(line.get("span").is_none(), "{line}");
    }
}
