//! The bad-input corpus (`tests/fixtures/bad-requests/*.toml`, one crafted request per file with
//! its expected status) replayed against the ingress twice: through the Lambda handler (over
//! moto's server) and over HTTP against a real `plumbline dev`. Every request must get its
//! status and error code, leave nothing stored or enqueued, and move the rejection metric.

use std::collections::BTreeMap;
use std::path::PathBuf;

use plumbline::sources::SourceKind;
use plumbline::sources::sign::{Envelope, sign};
use serde::Deserialize;
use serde_json::Value;

use crate::helpers::dev::Dev;
use crate::helpers::{
    ADYEN_KEY, CONFIG, PADDLE_SECRET, SHOPIFY_SECRET, SITE_SECRET, STRIPE_SECRET, Stack, T0,
    apigw_event, fixture, repo_path, source_scheme, unique,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    source: String,
    #[serde(default = "post")]
    method: String,
    status: u16,
    error: Option<String>,
    body_fixture: Option<String>,
    body: Option<String>,
    body_hex: Option<String>,
    /// `nested:N` (N arrays deep) or `big:N` (a JSON object of N bytes).
    body_gen: Option<String>,
    /// Replace the first `[0]` in the signed body with `[1]`.
    tamper: Option<[String; 2]>,
    /// Appended after `headers`: the same name again makes a duplicated header.
    #[serde(default)]
    extra_headers: Vec<[String; 2]>,
    sign: Option<Sign>,
    /// Set after signing; `""` removes the header; `{signed}` is what signing put there, `{t}`
    /// the signed timestamp.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sign {
    /// `right` (the source's secret), `wrong`, or `retired` (one rotated out).
    secret: String,
    #[serde(default)]
    at: i64,
    event_id: Option<String>,
    topic: Option<String>,
}

fn post() -> String {
    "POST".into()
}

/// A request as built from a case, before either path sends it.
struct Request {
    method: String,
    source: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn secret(source: &str, which: &str) -> String {
    let (kind, configured) = source_scheme(source).expect("a known source");
    match (kind, which) {
        (_, "right") => configured.into(),
        (SourceKind::StandardWebhooks, "wrong") => "whsec_d3Jvbmctc2VjcmV0LWZvci10ZXN0cw==".into(),
        (SourceKind::StandardWebhooks, _) => "whsec_cmV0aXJlZC1zZWNyZXQtZm9yLXRlc3Rz".into(),
        (SourceKind::Adyen, "wrong") => "FF".repeat(32),
        (SourceKind::Adyen, _) => "EE".repeat(32),
        (_, w) => format!("whsec_{w}_secret_for_tests"),
    }
}

fn body_of(case: &Case) -> Vec<u8> {
    if let Some(f) = &case.body_fixture {
        return fixture(f);
    }
    if let Some(text) = &case.body {
        return text.clone().into_bytes();
    }
    if let Some(h) = &case.body_hex {
        return hex::decode(h).expect("body_hex");
    }
    let generator = case.body_gen.as_deref().expect("a body");
    let (what, n) = generator.split_once(':').expect("kind:size");
    let n: usize = n.parse().expect("size");
    match what {
        "nested" => {
            let mut b = "[".repeat(n).into_bytes();
            b.extend("]".repeat(n).into_bytes());
            b
        }
        "big" => {
            let head = br#"{"id":"evt_big","type":"payment_intent.succeeded","pad":""#;
            let mut b = head.to_vec();
            b.resize(n - 2, b'x');
            b.extend(br#""}"#);
            b
        }
        other => panic!("unknown generator {other}"),
    }
}

fn build(case: &Case, now: i64) -> Request {
    let mut body = body_of(case);
    let mut headers: Vec<(String, String)> =
        vec![("content-type".into(), "application/json".into())];
    let mut t = now;
    if let Some(s) = &case.sign {
        let (kind, _) = source_scheme(&case.source).expect("a source with a signing scheme");
        t = now + s.at;
        let signed = match sign(
            kind,
            &secret(&case.source, &s.secret),
            Envelope {
                event_id: s.event_id.as_deref().unwrap_or("evt_corpus"),
                timestamp: t,
                topic: s.topic.as_deref(),
            },
            &body,
        ) {
            Ok(signed) => signed,
            // Adyen signs inside the body: a body that is not its JSON goes out unsigned.
            Err(_) if kind == SourceKind::Adyen => plumbline::sources::sign::Signed {
                headers: Vec::new(),
                body: body.clone(),
            },
            Err(e) => panic!("sign: {e}"),
        };
        body = signed.body;
        for (k, v) in signed.headers {
            let k = k.to_ascii_lowercase();
            headers.retain(|(name, _)| *name != k);
            headers.push((k, v));
        }
    }
    if let Some([from, to]) = &case.tamper {
        let text = String::from_utf8(body).expect("a text body to tamper with");
        assert!(text.contains(from.as_str()), "{from} is not in the body");
        body = text.replacen(from.as_str(), to, 1).into_bytes();
    }
    let fill = |value: &str, headers: &[(String, String)], name: &str| {
        let signed = headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        value
            .replace("{signed}", &signed)
            .replace("{t}", &t.to_string())
    };
    for (name, value) in &case.headers {
        let value = fill(value, &headers, name);
        headers.retain(|(k, _)| k != name);
        if !value.is_empty() {
            headers.push((name.clone(), value));
        }
    }
    for [name, value] in &case.extra_headers {
        let value = fill(value, &headers, name);
        headers.push((name.clone(), value));
    }
    Request {
        method: case.method.clone(),
        source: case.source.clone(),
        headers,
        body,
    }
}

fn corpus() -> Vec<(String, Case)> {
    let dir = repo_path("tests/fixtures/bad-requests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("read");
            let case = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, case)
        })
        .collect()
}

fn check_answer(name: &str, case: &Case, status: u16, body: &str) {
    assert_eq!(status, case.status, "{name}: {body}");
    let answer: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{name}: not JSON: {body}"));
    if let Some(error) = &case.error {
        assert_eq!(answer["error"], error.as_str(), "{name}: {body}");
    }
    assert!(
        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{name}: {body}"
    );
}

#[test]
fn the_corpus_has_at_least_a_hundred_requests() {
    assert!(corpus().len() >= 100, "{}", corpus().len());
}

#[tokio::test]
async fn every_bad_request_is_refused_by_the_lambda_handler_and_nothing_is_stored() {
    let stack = Stack::new().await;
    for (i, (name, case)) in corpus().into_iter().enumerate() {
        let request = build(&case, T0);
        // API Gateway's payload 2.0 joins a repeated header's values with commas.
        let mut joined: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &request.headers {
            joined
                .entry(k.clone())
                .and_modify(|all| {
                    all.push(',');
                    all.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        let mut event = apigw_event(&request.method, &request.source, &[], &request.body);
        event["headers"]
            .as_object_mut()
            .expect("headers")
            .remove("content-type");
        for (k, v) in joined {
            event["headers"][k] = Value::String(v);
        }
        let http = lambda_http::request::from_str(&event.to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (status, body) = stack.send(http).await;
        check_answer(&name, &case, status, &body);
        let rejected: Vec<_> = stack
            .metrics
            .all()
            .into_iter()
            .filter(|m| m.name == "IngressRejected")
            .collect();
        assert_eq!(rejected.len(), i + 1, "{name}: the rejection was counted");
        if let Some(error) = &case.error {
            assert!(
                rejected[i]
                    .dimensions
                    .iter()
                    .any(|(k, v)| *k == "Reason" && v == error),
                "{name}: {:?}",
                rejected[i]
            );
        }
        assert!(
            stack.items().await.is_empty(),
            "{name}: something was stored"
        );
    }
    assert!(stack.messages().await.is_empty(), "something was enqueued");
}

#[tokio::test]
async fn every_bad_request_is_refused_by_plumbline_dev_and_nothing_is_stored() {
    let dir = std::env::temp_dir().join(unique("plumbline-corpus"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("plumbline.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let dev = Dev::start(&config, &dir.join("data"), &secret_env());
    let client = crate::helpers::http();
    let status = || async {
        let s = dev.status().await;
        let stored: u64 = s["event_counts"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        (
            s["rejected_requests"].as_u64().expect("rejected"),
            stored,
            s["queue"].clone(),
        )
    };
    let now = crate::helpers::unix_now();
    for (i, (name, case)) in corpus().into_iter().enumerate() {
        let request = build(&case, now);
        let mut url = reqwest::Url::parse(&format!("{}/webhooks/", dev.url)).expect("url");
        url.path_segments_mut()
            .expect("base")
            .pop_if_empty()
            .push(&request.source);
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &request.headers {
            headers.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                reqwest::header::HeaderValue::from_str(v).expect("value"),
            );
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("method");
        let response = client
            .request(method, url)
            .headers(headers)
            .body(request.body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let code = response.status().as_u16();
        let body = response.text().await.expect("body");
        check_answer(&name, &case, code, &body);
        let (rejected, stored, queue) = status().await;
        assert_eq!(rejected, i as u64 + 1, "{name}: the rejection was counted");
        assert_eq!(stored, 0, "{name}: something was stored");
        assert_eq!(queue["depth"], 0, "{name}: something was enqueued: {queue}");
    }
}

/// A sender that writes its whole body before it reads the answer (Python's `http.client`,
/// many webhook senders) must still read the 413 of an oversized body from `plumbline dev`,
/// not a reset connection. Nine megabytes is far past the limit and past what loopback's
/// socket buffers absorb, and under API Gateway's own 10 MB cap.
#[tokio::test]
async fn an_oversized_body_sent_whole_before_the_answer_is_read_gets_its_413() {
    use std::io::{BufReader, Read, Write};

    let dir = std::env::temp_dir().join(unique("plumbline-oversized"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("plumbline.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let dev = Dev::start(&config, &dir.join("data"), &secret_env());
    let addr = dev.url.trim_start_matches("http://").to_owned();
    let exchange = tokio::task::spawn_blocking(move || {
        let body = vec![b' '; 9_000_000];
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        write!(
            stream,
            "POST /webhooks/stripe HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Stripe-Signature: t=1,v1=00\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        stream.write_all(&body)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let (status, content_length) = read_head(&mut reader)?;
        let mut answer = vec![0; content_length];
        reader.read_exact(&mut answer)?;
        // The connection is still good for the next request.
        write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        let (next, _) = read_head(&mut reader)?;
        std::io::Result::Ok((status, String::from_utf8_lossy(&answer).into_owned(), next))
    });

    let (status, answer, next) = exchange
        .await
        .expect("join")
        .expect("the whole request written and its answer read");
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{answer}");
    assert!(answer.contains(r#""error":"too_large""#), "{answer}");
    assert_eq!(next, "HTTP/1.1 200 OK");
    assert_eq!(dev.status().await["rejected_requests"].as_u64(), Some(1));
}

/// The secrets `CONFIG` names, for a `plumbline dev` process.
fn secret_env() -> [(&'static str, &'static str); 6] {
    [
        ("STRIPE_SECRET", STRIPE_SECRET),
        ("STRIPE_SECRET_OLD", "whsec_integration_previous"),
        ("SITE_SECRET", SITE_SECRET),
        ("SHOPIFY_SECRET", SHOPIFY_SECRET),
        ("ADYEN_KEY", ADYEN_KEY),
        ("PADDLE_SECRET", PADDLE_SECRET),
    ]
}

/// An HTTP/1.1 response's status line and `Content-Length`, the head read off `reader`.
fn read_head(reader: &mut impl std::io::BufRead) -> std::io::Result<(String, usize)> {
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            return Ok((status.trim().to_owned(), length));
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
}
