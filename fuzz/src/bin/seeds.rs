//! Writes the seed corpus from the repository's fixtures: every provider fixture signed for
//! `verify` and raw for `normalize`, the example configs for `config`, and queue bodies for
//! `sqs_message`. Run from `fuzz/`: `cargo run --bin seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use plumbline::sources::SourceKind;
use plumbline::sources::sign::{self, Envelope};
use plumbline_fuzz::{KINDS, NOW, SHOPIFY_TOPICS, join_request, secret};

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(name), data).expect("seed written");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixtures = root.join("tests/fixtures");
    let sources = [
        ("stripe", SourceKind::Stripe),
        ("site", SourceKind::StandardWebhooks),
        ("shopify", SourceKind::Shopify),
        ("adyen", SourceKind::Adyen),
        ("paddle", SourceKind::Paddle),
    ];
    for (dir, kind) in sources {
        let index = u8::try_from(KINDS.iter().position(|k| *k == kind).expect("listed"))
            .expect("five kinds");
        for path in files(&fixtures.join(dir), "json") {
            let body = fs::read(&path).expect("fixture");
            let stem = path.file_stem().expect("name").to_string_lossy();
            let topic = SHOPIFY_TOPICS
                .iter()
                .position(|t| t.replace('/', ".") == stem)
                .unwrap_or(0);
            let meta = Envelope {
                event_id: "evt_seed",
                timestamp: NOW,
                topic: Some(SHOPIFY_TOPICS[topic]),
            };
            let mut raw = vec![index, u8::try_from(topic).expect("few topics")];
            raw.extend_from_slice(&body);
            write("normalize", &format!("{dir}-{stem}"), &raw);

            let signed = sign::sign(kind, secret(kind), meta, &body).expect("fixtures sign");
            let mut request = vec![index];
            request.extend(join_request(&signed.headers, &signed.body));
            write("verify", &format!("{dir}-{stem}"), &request);
        }
    }
    for dir in ["docs/examples", "infra/config", "."] {
        for path in files(&root.join(dir), "toml") {
            let name = path.file_name().expect("name").to_string_lossy();
            write("config", &name, &fs::read(&path).expect("config"));
        }
    }
    for path in files(&root.join("docs/contract/fixtures/v1"), "json") {
        let envelope = fs::read_to_string(&path).expect("envelope");
        let stem = path.file_stem().expect("name").to_string_lossy();
        let body = format!(r#"{{"key":"EVT#stripe#evt_seed","event":{envelope}}}"#);
        write("sqs_message", &stem, body.as_bytes());
    }
    write(
        "sqs_message",
        "key-only",
        br#"{"key":"EVT#stripe#evt_seed"}"#,
    );
}
