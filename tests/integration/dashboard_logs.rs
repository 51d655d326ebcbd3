//! The dashboard's log widgets and the stack's saved queries: Logs Insights queries of the
//! functions' own log groups. Read here as Logs Insights would run them over the lines the
//! functions write, so that a query naming a field, a level or a message the code does not write
//! fails a test, not an operator looking at an empty table during an incident.

use serde_json::Value;

use crate::helpers::{dashboard_body, template_resources as resources};
use crate::redaction::seeded_flows_logged_at;
use crate::template::{functions, referenced};

/// A log widget's query, in the parts this test reads.
#[derive(Debug)]
struct LogWidget {
    title: String,
    /// The `${Logical}` names of the log groups it reads (its `SOURCE` commands).
    sources: Vec<String>,
    /// The fields it shows, Logs Insights' own (`@timestamp`) left out.
    fields: Vec<String>,
    /// `filter a = "x" or b = "y"`: the paths and the values, any of which selects a line.
    any_of: Vec<(String, String)>,
}

fn log_widgets() -> Vec<LogWidget> {
    dashboard_body()["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .filter(|w| w["type"] == "log")
        .map(|w| {
            let properties = &w["properties"];
            assert_eq!(properties["region"], "${AWS::Region}", "{w}");
            parse(
                properties["title"].as_str().expect("a title"),
                properties["query"].as_str().expect("a query"),
                Vec::new(),
            )
        })
        .collect()
}

/// The stack's saved queries (`AWS::Logs::QueryDefinition`), their log groups from
/// `LogGroupNames`.
fn saved_queries() -> Vec<LogWidget> {
    resources()
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Logs::QueryDefinition"))
        .map(|r| {
            let properties = &r["Properties"];
            // `!Sub plumbline/${AWS::StackName}/…`: the name as the template writes it.
            let name = match &properties["Name"] {
                serde_yaml_ng::Value::Tagged(tagged) => &tagged.value,
                plain => plain,
            };
            let title = name.as_str().expect("a name").to_owned();
            let sources = properties["LogGroupNames"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{title}: no LogGroupNames"))
                .iter()
                .map(|g| {
                    referenced(g)
                        .unwrap_or_else(|| panic!("{title}: {g:?} is no log group of the stack's"))
                        .to_owned()
                })
                .collect();
            parse(
                &title,
                properties["QueryString"].as_str().expect("a query"),
                sources,
            )
        })
        .collect()
}

/// Reads the commands these queries use; any other fails, so that a new one is taught to
/// [`selects`] before it is trusted. `sources`: the log groups a saved query names beside it.
fn parse(title: &str, query: &str, sources: Vec<String>) -> LogWidget {
    let mut widget = LogWidget {
        title: title.to_owned(),
        sources,
        fields: Vec::new(),
        any_of: Vec::new(),
    };
    for command in query.split(" | ") {
        let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
        match verb {
            "SOURCE" => {
                let group = rest
                    .strip_prefix("'${")
                    .and_then(|r| r.strip_suffix("}'"))
                    .unwrap_or_else(|| {
                        panic!("{title}: SOURCE {rest} is no log group of the stack's")
                    });
                widget.sources.push(group.to_owned());
            }
            "fields" => {
                widget.fields = rest
                    .split(", ")
                    .filter(|f| !f.starts_with('@'))
                    .map(str::to_owned)
                    .collect();
            }
            "filter" => {
                widget.any_of = rest
                    .split(" or ")
                    .map(|term| {
                        let (path, value) = term.split_once(" = ").unwrap_or_else(|| {
                            panic!("{title}: a filter term this test cannot read: {term}")
                        });
                        let value = value
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("{title}: {value} is not a quoted string"));
                        (path.to_owned(), value.to_owned())
                    })
                    .collect();
            }
            "sort" | "limit" => {}
            other => panic!("{title}: a command this test cannot read: {other}"),
        }
    }
    assert!(!widget.sources.is_empty(), "{title}: reads no log group");
    assert!(!widget.any_of.is_empty(), "{title}: filters nothing");
    widget
}

/// What the functions write through the redaction test's flows, and each line parsed.
async fn seeded_lines() -> (String, Vec<Value>) {
    let logs = seeded_flows_logged_at("info").await;
    let lines = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (logs, lines)
}

/// The value at a dotted path (`span.event_id`), as Logs Insights names a JSON line's fields.
fn at<'a>(line: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(line, |node, key| node.get(key))
}

fn selects(widget: &LogWidget, line: &Value) -> bool {
    widget
        .any_of
        .iter()
        .any(|(path, value)| at(line, path).and_then(Value::as_str) == Some(value))
}

/// Each widget and saved query reads log groups the functions write to; the warnings' widget
/// reads all three.
#[test]
fn every_log_widget_and_saved_query_reads_the_functions_own_log_groups() {
    let all = resources();
    let groups: Vec<&str> = functions(&all)
        .into_iter()
        .map(|(name, f)| {
            referenced(&f["Properties"]["LoggingConfig"]["LogGroup"])
                .unwrap_or_else(|| panic!("{name} names no log group"))
        })
        .collect();
    let widgets = log_widgets();
    assert_eq!(widgets.len(), 2, "{widgets:?}");
    let saved = saved_queries();
    assert_eq!(saved.len(), 1, "{saved:?}");
    for widget in widgets.iter().chain(&saved) {
        for source in &widget.sources {
            assert!(
                groups.contains(&source.as_str()),
                "{}: {source} is no function's log group",
                widget.title
            );
        }
    }
    assert!(
        widgets
            .iter()
            .any(|w| groups.iter().all(|g| w.sources.iter().any(|s| s == g))),
        "a widget shows every function's warnings"
    );
}

/// Over what the functions write through a dead-lettering delivery (the flows of the redaction
/// test): each widget's filter selects lines, and each field it shows is on one of them.
#[tokio::test]
async fn every_log_widget_selects_lines_the_functions_write_and_shows_their_fields() {
    let (logs, lines) = seeded_lines().await;
    let widgets = log_widgets();
    for widget in &widgets {
        let selected: Vec<&Value> = lines.iter().filter(|l| selects(widget, l)).collect();
        assert!(
            !selected.is_empty(),
            "{}: selects none of the lines written:\n{logs}",
            widget.title
        );
        for field in &widget.fields {
            assert!(
                selected.iter().any(|l| at(l, field).is_some()),
                "{}: shows {field}, which none of its lines has:\n{selected:#?}",
                widget.title
            );
        }
    }
    // The warnings' widget compares levels as the subscriber writes them.
    let warnings = widgets
        .iter()
        .find(|w| w.any_of.iter().all(|(path, _)| path == "level"))
        .expect("a widget of warnings and errors");
    let above_info = |l: &&Value| {
        l["level"]
            .as_str()
            .is_some_and(|level| !["INFO", "DEBUG", "TRACE"].contains(&level))
    };
    let written = lines.iter().filter(above_info).count();
    assert!(written >= 3, "the flows dead-letter three times:\n{logs}");
    assert_eq!(
        lines.iter().filter(|l| selects(warnings, l)).count(),
        written,
        "every line above INFO, and no other"
    );
}

/// The saved query that follows one event, its `EVENT_ID` replaced by a payment's id, over what
/// the functions write through a dead-lettering delivery: it selects the ingress's line for
/// the event and the delivery's for each target (delivered to one, dead-lettered by the other),
/// no line of another event, and each field it shows is on one of them; for a payment that
/// reconciliation took in, its line first.
#[tokio::test]
async fn the_saved_event_trail_selects_every_line_of_that_event_and_no_other() {
    let (logs, lines) = seeded_lines().await;
    let template = saved_queries()
        .into_iter()
        .find(|q| q.any_of.iter().all(|(_, value)| value == "EVENT_ID"))
        .expect("a saved query of one event");
    let payment = lines
        .iter()
        .find(|l| l["message"] == "event taken" && l["event_type"] == "payment.succeeded")
        .and_then(|l| l["event_id"].as_str())
        .unwrap_or_else(|| panic!("the payment was taken:\n{logs}"));
    // The saved query as an operator runs it: `EVENT_ID` replaced by the event's id.
    let trail = |id: &str| LogWidget {
        title: template.title.clone(),
        sources: template.sources.clone(),
        fields: template.fields.clone(),
        any_of: template
            .any_of
            .iter()
            .map(|(path, _)| (path.clone(), id.to_owned()))
            .collect(),
    };
    let of_payment = trail(payment);
    let selected: Vec<&Value> = lines.iter().filter(|l| selects(&of_payment, l)).collect();
    let messages: Vec<&str> = selected
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    for expected in ["event taken", "delivered", "dead-lettered"] {
        assert!(
            messages.contains(&expected),
            "{expected}: not among the event's lines {selected:#?}\n{logs}"
        );
    }
    // A payment reconciliation took in from the provider's list: its line, then delivery's.
    let missed = lines
        .iter()
        .find(|l| l["message"] == "missed webhook taken in from the provider's list")
        .and_then(|l| l["event_id"].as_str())
        .unwrap_or_else(|| panic!("reconciliation names the event it took in:\n{logs}"));
    let of_missed = trail(missed);
    let missed_messages: Vec<&str> = lines
        .iter()
        .filter(|l| selects(&of_missed, l))
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        missed_messages.starts_with(&["missed webhook taken in from the provider's list"])
            && missed_messages.contains(&"delivered"),
        "{missed_messages:?}\n{logs}"
    );
    let of_other_events = lines
        .iter()
        .filter(|l| !selects(&of_payment, l))
        .filter(|l| l["event_id"].is_string() || l["span"]["event_id"].is_string())
        .count();
    assert!(
        of_other_events >= 2,
        "other events' lines were written:\n{logs}"
    );
    for field in &of_payment.fields {
        assert!(
            selected.iter().any(|l| at(l, field).is_some()),
            "{}: shows {field}, which none of its lines has:\n{selected:#?}",
            of_payment.title
        );
    }
}
