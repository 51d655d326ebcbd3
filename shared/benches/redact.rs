//! The redaction every log line passes through (`telemetry::redact`): a typical clean JSON line,
//! and one that quotes personal data and a secret by mistake; and a whole line as the functions
//! write it (formatted as JSON, stamped, redacted), to an empty sink.
//!
//! Run: `cargo bench -p plumbline --bench redact`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plumbline::telemetry::redact;

/// What the delivery function writes for one delivered event.
const CLEAN: &str = r#"{"timestamp":"2026-12-02T09:16:36.177723Z","level":"INFO","fields":{"message":"delivered","outcome":"delivered","attempt":1,"latency_ms":42},"target":"plumbline::delivery","span":{"event_id":"01M8V0N8EHNV5AMNKSDC7X4G6X","source":"stripe","target":"erp","name":"record"},"requestId":"8f6c2a4e-1b3d-4c5e-9f70-2a1b3c4d5e6f"}"#;

/// An error line that quotes a payload: an email, a card-like number and a signing secret.
const DIRTY: &str = r#"{"timestamp":"2026-12-02T09:16:36.177723Z","level":"WARN","fields":{"message":"target refused","error":"HTTP 400: {\"email\":\"jane.doe@example.com\",\"card\":\"4242 4242 4242 4242\",\"secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"}"},"target":"plumbline::delivery","span":{"event_id":"01M8V0N8EHNV5AMNKSDC7X4G6X","source":"stripe","target":"erp","name":"record"}}"#;

fn lines(c: &mut Criterion) {
    assert_eq!(redact(CLEAN), CLEAN, "nothing to redact in the clean line");
    assert!(
        !redact(DIRTY).contains("jane.doe"),
        "the dirty line is redacted"
    );
    let mut group = c.benchmark_group("redact");
    for (name, line) in [("clean_line", CLEAN), ("line_with_personal_data", DIRTY)] {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_function(name, |b| b.iter(|| redact(black_box(line))));
    }
    group.finish();
}

/// One delivered event's line through the functions' subscriber at info, in the spans the
/// delivery writes it in (the runtime's invocation, the record, the target's call), written to
/// a sink: everything a log line costs a function but the write to stdout.
fn whole_line(c: &mut Criterion) {
    use plumbline::telemetry::{Redacting, lambda_subscriber};
    let subscriber = lambda_subscriber("info", false, Redacting(std::io::sink));
    tracing::subscriber::with_default(subscriber, || {
        let invocation = tracing::info_span!(
            "Lambda runtime invoke",
            requestId = "8f6c2a4e-1b3d-4c5e-9f70-2a1b3c4d5e6f",
            xrayTraceId = "Root=1-6756a1b2-3c4d5e6f7a8b9c0d1e2f3a4b"
        );
        let _invocation = invocation.enter();
        let record = tracing::info_span!(
            "process_decoded",
            message_id = "059f36b4-87a3-44ab-83d2-661975830a7d",
            event_id = "01M8V0N8EHNV5AMNKSDC7X4G6X",
            event_type = "payment.succeeded"
        );
        let _record = record.enter();
        let span = tracing::info_span!("deliver", target = "erp");
        let _entered = span.enter();
        c.bench_function("log_line/delivered", |b| {
            b.iter(|| {
                tracing::info!(
                    outcome = "delivered",
                    attempt = black_box(1),
                    latency_ms = black_box(42),
                    "delivered"
                );
            });
        });
    });
}

/// The clean line again, with four secrets known by value, as a function that resolved four
/// (its sources' signing secrets, a target's key) redacts every line. Last: what it registers
/// stays for the rest of the process.
fn with_known_secrets(c: &mut Criterion) {
    for secret in [
        "0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F9",
        "pdl_ntfset_01hv8x2k5m3n4p6q7r8s9t0v_c2VjcmV0LWZvci1wYWRkbGU",
        "erp-api-key-5d1f0c7e9b2a4863",
        "whsec_ZXJwLXNpZ25pbmctc2VjcmV0LWZvci10ZXN0cw==",
    ] {
        plumbline::telemetry::redact_value(secret);
    }
    assert_eq!(redact(CLEAN), CLEAN, "nothing to redact in the clean line");
    c.bench_function("redact/clean_line_four_known_secrets", |b| {
        b.iter(|| redact(black_box(CLEAN)));
    });
}

criterion_group!(benches, lines, whole_line, with_known_secrets);
criterion_main!(benches);
