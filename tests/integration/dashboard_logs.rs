//! The dashboard's log widgets: Logs Insights queries of the functions' own log groups. Read
//! here as Logs Insights would run them over the lines the functions write, so that a query
//! naming a field, a level or a message the code does not write fails a test, not an operator
//! looking at an empty table during an incident.

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
            )
        })
        .collect()
}

/// Reads the commands this dashboard uses; any other fails, so that a new one is taught to
/// [`selects`] before it is trusted.
fn parse(title: &str, query: &str) -> LogWidget {
    let mut widget = LogWidget {
        title: title.to_owned(),
        sources: Vec::new(),
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

/// Each widget reads log groups the functions write to; the warnings' widget reads all three.
#[test]
fn every_log_widget_reads_the_functions_own_log_groups() {
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
    for widget in &widgets {
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
    let logs = seeded_flows_logged_at("info").await;
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
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
