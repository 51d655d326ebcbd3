//! Every key the file accepts is in docs/configuration.md's table of keys, every key the table
//! lists is accepted, every range it gives a value is the one the validation holds, and every
//! default it gives as a value is the one the parser applies: a setting added, renamed,
//! bounded or defaulted anew in one place only fails here. The keys are read from the file's own types
//! (what serde's derive lists as a struct's fields), so the list cannot drift from the parser.

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::Config;
use super::raw::{
    RawConfig, RawDelivery, RawIngress, RawLedger, RawReconcile, RawRoute, RawSource, RawTarget,
};
use crate::delivery::mapping::FieldMapping;

/// The field names serde's derive gives `T`'s `deserialize_struct`.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Catch<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Catch<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("fields read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Catch(&mut fields));
    fields.expect("a struct's fields")
}

/// Each table below the top level, by how the docs write its keys, and the keys it takes.
fn sections() -> [(&'static str, &'static [&'static str]); 8] {
    [
        ("sources.<name>.", fields_of::<RawSource>()),
        ("targets.<name>.", fields_of::<RawTarget>()),
        ("[[targets.<name>.fields]]", fields_of::<FieldMapping>()),
        ("[[routes]]", fields_of::<RawRoute>()),
        ("reconcile.", fields_of::<RawReconcile>()),
        ("ingress.", fields_of::<RawIngress>()),
        ("delivery.", fields_of::<RawDelivery>()),
        ("ledger.", fields_of::<RawLedger>()),
    ]
}

/// The rows of the table of keys, each split into its cells (key, type, default, meaning).
fn table_rows() -> Vec<Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md is readable");
    let table = text
        .split("\n## Keys\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/configuration.md has a section `## Keys`");
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .map(|row| row.split(" | ").map(str::to_owned).collect())
        .collect()
}

/// Each row of the table of keys by its first two cells: the key, and its type (where a table
/// of several keys, such as a field mapping's, names them).
fn documented_keys() -> Vec<String> {
    table_rows()
        .into_iter()
        .map(|cells| cells.into_iter().take(2).collect::<Vec<_>>().join(" | "))
        .collect()
}

/// The keys a row's first cell names, each written whole (`` `reconcile.window_days` ``, or
/// several: `` `delivery.backoff_base_secs`, `delivery.backoff_cap_secs` ``); `None` where one is
/// a pattern or a part (`` `[[routes]] events` ``, `` `pipeline` `` after a whole key).
fn whole_keys(cell: &str) -> Option<Vec<&str>> {
    let keys: Vec<&str> = cell.split(", ").map(|k| k.trim_matches('`')).collect();
    (!keys.iter().any(|k| k.contains(['`', ' ', '[']))).then_some(keys)
}

/// The defaults the table gives as values (`300`, `false`; `2, 900` for a row of two keys),
/// each with its key. Defaults in words (`the provider's`, `required`) are left to the reader.
fn documented_defaults() -> Vec<(String, String)> {
    let is_value =
        |text: &str| text == "true" || text == "false" || text.chars().all(|c| c.is_ascii_digit());
    let mut defaults = Vec::new();
    for cells in table_rows() {
        let (Some(keys), Some(values)) = (cells.first(), cells.get(2)) else {
            continue;
        };
        let values: Vec<&str> = values.split(", ").collect();
        if values.iter().any(|v| v.is_empty() || !is_value(v)) {
            continue;
        }
        let Some(keys) = whole_keys(keys) else {
            continue;
        };
        assert_eq!(
            keys.len(),
            values.len(),
            "the row of {keys:?} gives {} defaults for {} keys",
            values.len(),
            keys.len()
        );
        defaults.extend(
            keys.iter()
                .zip(&values)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
    }
    defaults
}

/// Whether `cell` names `field` as a whole word (`reconcile.page_limit`, `` `pipeline` ``,
/// `[[targets.<name>.fields]]`), not inside another name.
fn names(cell: &str, field: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    cell.match_indices(field).any(|(at, _)| {
        let before = cell[..at].chars().next_back();
        let after = cell[at + field.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

/// The fields of `section` that no row of that section names.
fn undocumented(rows: &[String], section: &str, fields: &[&str]) -> Vec<String> {
    let rows: Vec<&String> = rows.iter().filter(|r| r.contains(section)).collect();
    fields
        .iter()
        .filter(|field| !rows.iter().any(|row| names(row, field)))
        .map(|field| {
            if section.ends_with('.') {
                format!("{section}{field}")
            } else {
                format!("{section} {field}")
            }
        })
        .collect()
}

#[test]
fn every_key_the_file_accepts_is_documented() {
    let rows = documented_keys();
    assert!(
        rows.len() >= 30,
        "only {} rows in the table of keys",
        rows.len()
    );
    let mut missing = Vec::new();
    // Each top-level table by its own name at the start of a key.
    for table in fields_of::<RawConfig>() {
        if !rows
            .iter()
            .any(|r| r.contains(&format!("`{table}.")) || r.contains(&format!("[[{table}]]")))
        {
            missing.push(format!("[{table}]"));
        }
    }
    for (section, fields) in sections() {
        missing.extend(undocumented(&rows, section, fields));
    }
    assert!(
        missing.is_empty(),
        "keys the configuration accepts and docs/configuration.md does not list: {missing:?}"
    );
}

/// The keys a row names after `prefix` (`` `reconcile.page_limit` `` → `page_limit`); empty
/// where the prefix is a whole key (`` `[[routes]] events` ``).
fn named_after<'a>(row: &'a str, prefix: &str) -> Vec<&'a str> {
    row.match_indices(&format!("`{prefix}"))
        .map(|(at, found)| {
            let rest = &row[at + found.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn every_key_documented_is_one_the_file_accepts() {
    let rows = documented_keys();
    let mut unknown = Vec::new();
    for row in &rows {
        for (prefix, fields) in sections() {
            for key in named_after(row, prefix) {
                if !key.is_empty() && !fields.contains(&key) {
                    unknown.push(format!("{prefix}{key}"));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "keys docs/configuration.md lists and the configuration refuses: {unknown:?}"
    );
}

/// A range the table gives a key: `integer 1–86400` (both ends), or `seconds ≥ 60` (no top).
fn range_in(cell: &str) -> Option<(i64, Option<i64>)> {
    let number = |text: &str| {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<i64>().ok()
    };
    if let Some((_, rest)) = cell.split_once("≥ ") {
        return number(rest).map(|low| (low, None));
    }
    let (before, after) = cell.split_once('–')?;
    // The digits just before the dash.
    let low = before.rsplit(|c: char| !c.is_ascii_digit()).next()?;
    Some((low.parse().ok()?, Some(number(after)?)))
}

/// A valid file with `source` and `target` lines added to its one source and target, and
/// `table` after them.
fn file(source: &str, target: &str, table: &str) -> String {
    format!(
        "[sources.shop]\nkind = \"stripe\"\nsecrets = [\"env:SHOP_SECRET\"]\n{source}\n\
         [targets.erp]\nkind = \"http\"\nurl = \"https://erp.example.com/\"\n{target}\n\
         [[routes]]\nevents = [\"payment.*\"]\ntargets = [\"erp\"]\n\n{table}"
    )
}

/// A file that sets `key` (as the table writes it) to `value` (TOML), and is otherwise valid.
fn setting(key: &str, value: &str) -> String {
    if let Some(field) = key.strip_prefix("sources.<name>.") {
        file(&format!("{field} = {value}\n"), "", "")
    } else if let Some(field) = key.strip_prefix("targets.<name>.") {
        file("", &format!("{field} = {value}\n"), "")
    } else {
        let (section, field) = key.split_once('.').expect("a key in a table");
        file("", "", &format!("[{section}]\n{field} = {value}\n"))
    }
}

#[test]
fn every_range_the_table_gives_is_the_one_the_parser_holds() {
    let mut ranges = Vec::new();
    for cells in table_rows() {
        let (Some(keys), Some(kind)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        // One key to a row, written whole (`reconcile.window_days`).
        if let (Some([key]), Some(range)) = (whole_keys(keys).as_deref(), range_in(kind)) {
            ranges.push(((*key).to_owned(), range));
        }
    }
    assert!(
        ranges.len() >= 9,
        "only {} ranges in the table: {ranges:?}",
        ranges.len()
    );
    let mut wrong = Vec::new();
    for (key, (low, high)) in &ranges {
        let mut expect = vec![(*low, true), (low - 1, false)];
        if let Some(high) = high {
            expect.extend([(*high, true), (high + 1, false)]);
        }
        for (value, valid) in expect {
            let parsed = Config::parse(&setting(key, &value.to_string()));
            if parsed.is_ok() != valid {
                wrong.push(format!(
                    "{key} = {value}: the table says {}, the parser {}",
                    if valid { "valid" } else { "invalid" },
                    if parsed.is_ok() {
                        "accepts it"
                    } else {
                        "refuses it"
                    },
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "ranges in docs/configuration.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_default_the_table_gives_is_the_one_the_parser_applies() {
    let defaults = documented_defaults();
    assert!(
        defaults.len() >= 20,
        "only {} defaults in the table: {defaults:?}",
        defaults.len()
    );
    // The file without the key, and with it set to the documented default, must read alike.
    let without = format!(
        "{:?}",
        Config::parse(&file("", "", "")).expect("a valid file")
    );
    let mut wrong = Vec::new();
    for (key, value) in &defaults {
        match Config::parse(&setting(key, value)) {
            Ok(config) if format!("{config:?}") == without => {}
            Ok(_) => wrong.push(format!(
                "{key}: the table says {value}, the parser applies another value"
            )),
            Err(err) => wrong.push(format!("{key} = {value} is refused: {err}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "defaults in docs/configuration.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_key_counts_as_documented_only_where_its_section_names_it() {
    let rows = vec![
        "`reconcile.page_limit`".to_owned(),
        "`targets.<name>.base_url`, `pipeline`".to_owned(),
        "`ingress.max_body_bytes`".to_owned(),
    ];
    assert!(undocumented(&rows, "reconcile.", &["page_limit"]).is_empty());
    assert!(undocumented(&rows, "targets.<name>.", &["pipeline", "base_url"]).is_empty());
    // `max_pages` is not `page_limit`; `limit` inside `page_limit` is not a key of its own.
    assert_eq!(
        undocumented(&rows, "reconcile.", &["max_pages", "limit"]),
        ["reconcile.max_pages", "reconcile.limit"]
    );
    // A name documented in another section does not count for this one.
    assert_eq!(
        undocumented(&rows, "delivery.", &["max_body_bytes"]),
        ["delivery.max_body_bytes"]
    );
    assert_eq!(
        named_after(
            "`delivery.backoff_base_secs`, `delivery.backoff_cap_secs`",
            "delivery."
        ),
        ["backoff_base_secs", "backoff_cap_secs"]
    );
    assert_eq!(range_in("integer 1–86400"), Some((1, Some(86400))));
    assert_eq!(range_in("days, 0–90"), Some((0, Some(90))));
    assert_eq!(range_in("seconds ≥ 60"), Some((60, None)));
    assert_eq!(range_in("integer"), None);
    assert!(Config::parse(&setting("reconcile.window_days", "7")).is_ok());
    // A value other than the default reads differently from the file without it.
    let without = format!(
        "{:?}",
        Config::parse(&file("", "", "")).expect("a valid file")
    );
    let other = Config::parse(&setting("reconcile.page_limit", "101")).expect("a valid file");
    assert_ne!(format!("{other:?}"), without);
    assert_eq!(
        fields_of::<RawIngress>(),
        ["max_body_bytes", "duplicate_horizon_secs", "retention_days"]
    );
}
