//! The commands the README, docs/, the template's descriptions and `--help`'s examples show an
//! operator are held to this command line: a runbook whose command no longer parses fails here,
//! not during an incident.
//!
//! A whole command line in a fenced block (`plumbline …`, `cargo run … -- …`) must parse as
//! written, placeholders (`<event id>`) standing in for values. A command quoted in running
//! text, or a synopsis with `[--flag V]`, is often partial; there every word that names a
//! subcommand must be one, and every `--flag` must belong to the command it is given to.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};

use crate::Cli;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the CLI's crate sits in the workspace")
        .to_path_buf()
}

/// The files an operator reads: the README, everything under docs/, and the template (its
/// parameters' descriptions name commands).
fn documents() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = vec![root.join("README.md"), root.join("infra/template.yaml")];
    let mut folders = vec![root.join("docs")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("docs/ is readable") {
            let path = entry.expect("a readable entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Where a command was found, for the failure message.
struct Found {
    at: String,
    text: String,
}

/// A fenced line that runs the command line, as the words after the program's name; `None`
/// for any other line.
fn command_line(line: &str) -> Option<String> {
    let line = line.trim().trim_start_matches("$ ");
    // Environment assignments before the command (`PLUMBLINE_TABLE=… plumbline …`).
    let mut rest = line;
    while let Some((word, after)) = rest.split_once(' ') {
        if word.contains('=') && !word.starts_with('-') {
            rest = after.trim_start();
        } else {
            break;
        }
    }
    let rest = rest.trim_start_matches("target/release/");
    if let Some(args) = rest.strip_prefix("plumbline ") {
        return Some(args.to_owned());
    }
    if rest.starts_with("cargo run") && rest.contains("-p plumbline-cli") {
        return rest.split_once(" -- ").map(|(_, args)| args.to_owned());
    }
    None
}

/// Every command in `text`: fenced lines whole, and quoted ones (`` `plumbline …` ``).
fn commands(file: &str, text: &str) -> (Vec<Found>, Vec<Found>) {
    let (mut whole, mut quoted) = (Vec::new(), Vec::new());
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            if let Some(args) = command_line(line) {
                let found = Found { at, text: args };
                // A synopsis (`[--config FILE]`) names options; it is not a line to run.
                if found.text.contains('[') {
                    quoted.push(found);
                } else {
                    whole.push(found);
                }
            }
            continue;
        }
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 1
                && let Some(args) = part.strip_prefix("plumbline ")
            {
                quoted.push(Found {
                    at: at.clone(),
                    text: args.to_owned(),
                });
            }
        }
    }
    (whole, quoted)
}

/// The words of a command as a shell would pass them, with placeholders filled in and what the
/// shell itself takes (a comment, a redirect, `&`) left out.
fn words(args: &str) -> Vec<String> {
    let mut filled = String::with_capacity(args.len());
    let mut placeholder = false;
    for c in args.chars() {
        match c {
            '<' => {
                placeholder = true;
                filled.push_str("placeholder");
            }
            '>' if placeholder => placeholder = false,
            _ if placeholder => {}
            _ => filled.push(c),
        }
    }
    let mut words = shlex::split(&filled).unwrap_or_else(|| panic!("unbalanced quotes: {args}"));
    if let Some(redirect) = words.iter().position(|w| w == ">" || w == "|") {
        words.truncate(redirect);
    }
    if words.last().is_some_and(|w| w == "&") {
        words.pop();
    }
    words
}

/// For a partial command: the subcommand its leading words name, and each `--flag` it gives.
fn check_quoted(root: &clap::Command, found: &Found) -> Result<(), String> {
    let mut command = root;
    let mut words = found
        .text
        .split_whitespace()
        .map(|w| w.trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | ',' | '.' | ':')))
        .filter(|w| !w.is_empty() && !matches!(*w, "|" | "\\|"))
        .peekable();
    // The first word must name a subcommand; later bare words are values or names.
    let first = words.next().unwrap_or_default();
    command = command
        .find_subcommand(first)
        .ok_or_else(|| format!("no subcommand `{first}`"))?;
    while let Some(word) = words.peek() {
        if word.starts_with('-') || command.get_subcommands().next().is_none() {
            break;
        }
        command = command
            .find_subcommand(word)
            .ok_or_else(|| format!("`{}` has no subcommand `{word}`", command.get_name()))?;
        words.next();
    }
    for word in words {
        let Some(flag) = word.strip_prefix("--") else {
            continue;
        };
        let flag = flag.split('=').next().unwrap_or(flag);
        if !command.get_arguments().any(|a| a.get_long() == Some(flag)) {
            return Err(format!("`{}` has no option `--{flag}`", command.get_name()));
        }
    }
    Ok(())
}

#[test]
fn every_command_the_docs_show_parses() {
    let mut root = Cli::command();
    root.build();
    let workspace = workspace();
    let (mut whole, mut quoted) = (Vec::new(), Vec::new());
    for file in documents() {
        let text = std::fs::read_to_string(&file).expect("a readable document");
        let name = file
            .strip_prefix(&workspace)
            .unwrap_or(&file)
            .display()
            .to_string();
        let (w, q) = commands(&name, &text);
        whole.extend(w);
        quoted.extend(q);
    }
    // Each command's examples in its `--help`.
    let mut examples = vec![&root];
    while let Some(command) = examples.pop() {
        examples.extend(command.get_subcommands());
        let help = command.get_after_help().map(ToString::to_string);
        for line in help.iter().flat_map(|h| h.lines()) {
            if let Some(args) = line.trim().strip_prefix("plumbline ") {
                whole.push(Found {
                    at: format!("`{}` --help", command.get_name()),
                    text: args.to_owned(),
                });
            }
        }
    }
    // The README alone shows more than this; finding fewer means the scan broke.
    assert!(
        whole.len() >= 20,
        "only {} whole commands found",
        whole.len()
    );
    assert!(
        quoted.len() >= 40,
        "only {} quoted commands found",
        quoted.len()
    );

    let mut wrong = Vec::new();
    for found in &whole {
        let argv = std::iter::once("plumbline".to_owned()).chain(words(&found.text));
        if let Err(e) = Cli::try_parse_from(argv) {
            let why = e.to_string();
            let why = why.lines().next().unwrap_or_default();
            wrong.push(format!("{}: plumbline {}\n    {why}", found.at, found.text));
        }
    }
    for found in &quoted {
        if let Err(why) = check_quoted(&root, found) {
            wrong.push(format!("{}: plumbline {}\n    {why}", found.at, found.text));
        }
    }
    assert!(
        wrong.is_empty(),
        "commands in the docs that the command line refuses:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_refuses_what_the_command_line_refuses() {
    let mut root = Cli::command();
    root.build();
    let quoted = |text: &str| {
        check_quoted(
            &root,
            &Found {
                at: String::new(),
                text: text.to_owned(),
            },
        )
    };
    assert!(quoted("events list [--status S] [--since 10m] [--json]").is_ok());
    assert!(quoted("events list --aws --status dead_lettered").is_ok());
    assert!(quoted("reconcile --history N [--aws]").is_ok());
    assert!(
        quoted("config check FILE [--json] [--secrets-prefix PREFIX \\| --samconfig FILE]").is_ok()
    );
    assert_eq!(
        quoted("events purge"),
        Err("`events` has no subcommand `purge`".to_owned())
    );
    assert_eq!(
        quoted("dlq list --everything"),
        Err("`list` has no option `--everything`".to_owned())
    );
    assert_eq!(
        quoted("reconsile --aws"),
        Err("no subcommand `reconsile`".to_owned())
    );

    assert_eq!(
        words("events show <event id> --aws   # the timeline"),
        ["events", "show", "placeholder", "--aws"]
    );
    assert_eq!(words("contract schema > out.json"), ["contract", "schema"]);
    assert_eq!(
        words("replay --reason 'HTTP 400' &"),
        ["replay", "--reason", "HTTP 400"]
    );
    assert_eq!(
        command_line("PLUMBLINE_TABLE=… PLUMBLINE_QUEUE_URL=… plumbline reconcile --aws")
            .as_deref(),
        Some("reconcile --aws")
    );
    assert_eq!(
        command_line("cargo run -q --release -p plumbline-cli -- dev --config F").as_deref(),
        Some("dev --config F")
    );
    assert_eq!(command_line("sam deploy --guided"), None);
    assert!(Cli::try_parse_from(["plumbline", "replay", "--aws", "--dry-run"]).is_ok());
    assert!(Cli::try_parse_from(["plumbline", "replay", "--dry-rum"]).is_err());
}
