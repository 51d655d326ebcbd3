//! The committed JSON Schema matches the type, and every committed golden fixture still parses.

use plumbline::contract::{Envelope, SCHEMA_V1, json_schema};

use crate::helpers::repo_path;

#[test]
fn the_committed_schema_matches_the_type() {
    let path = repo_path("docs/contract/plumbline.event.v1.schema.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file")).expect("JSON");
    assert!(
        committed == json_schema(),
        "{} is out of date: regenerate it with `cargo run -q --release -p plumbline-cli -- contract schema > {}`",
        path.display(),
        "docs/contract/plumbline.event.v1.schema.json"
    );
}

#[test]
fn every_golden_fixture_ever_committed_still_parses() {
    let dir = repo_path("docs/contract/fixtures/v1");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("fixture");
            let envelope: Envelope = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} no longer parses: {e}", path.display()));
            assert_eq!(envelope.schema, SCHEMA_V1, "{}", path.display());
            // Nothing is lost in a round trip: a v1 reader keeps every field it was given.
            let original: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(
                serde_json::to_value(&envelope).expect("serializes"),
                original,
                "{}",
                path.display()
            );
            count += 1;
        }
    }
    assert!(
        count >= 3,
        "expected the golden fixtures in {}",
        dir.display()
    );
}

#[test]
fn the_bundled_deployment_config_is_valid() {
    let config = plumbline::config::Config::load(&repo_path("infra/config/plumbline.toml"))
        .unwrap_or_else(|e| panic!("infra/config/plumbline.toml: {e}"));
    assert!(!config.sources.is_empty());
}

/// The configurations the README and docs/benchmarks.md run `plumbline dev` with.
#[test]
fn the_demo_and_example_configs_are_valid() {
    let mut files = vec![repo_path("cli/demo.toml")];
    for entry in std::fs::read_dir(repo_path("docs/examples")).expect("docs/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 3, "expected the example configs: {files:?}");
    for file in files {
        let config = plumbline::config::Config::load(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!config.routes.is_empty(), "{}: no routes", file.display());
    }
}
