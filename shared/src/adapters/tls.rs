//! One TLS stack for every outbound connection: rustls on ring. ring is a fraction of the size
//! of the alternative provider, and binary size is cold-start time on Lambda; the AWS SDK's
//! client is built on the same provider (see `aws_sdk`).
//!
//! Which authorities the HTTP clients (targets, provider APIs) trust: Mozilla's root program,
//! compiled in (`webpki-root-certs`), unless `SSL_CERT_FILE` or `SSL_CERT_DIR` names a store of the
//! operator's own (a private authority in front of a target), which is then read instead. The
//! system store is not read by default because reading it is about 2 ms of a cold start, and
//! every client built from it used to read it again. The AWS SDK's client trusts the same
//! authorities ([`sdk_trust_store`]).

use std::sync::{Arc, LazyLock};

#[cfg(feature = "aws")]
use aws_smithy_http_client::tls::TrustStore;
use rustls::RootCertStore;

/// Whether the operator names a store of their own (`SSL_CERT_FILE`, `SSL_CERT_DIR`).
fn own_store() -> bool {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

static AUTHORITIES: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    Arc::new(if own_store() {
        configured_store()
    } else {
        mozilla_roots()
    })
});

/// Mozilla's root program (`webpki-root-certs`, compiled in) as trust anchors: about 75 µs of
/// parsing, once.
fn mozilla_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    store
}

/// The store `SSL_CERT_FILE` / `SSL_CERT_DIR` name. Certificates webpki cannot parse are
/// skipped, as rustls's own loaders do; an empty store refuses every server, and says so.
fn configured_store() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(error = %error, "could not read a certificate authority");
    }
    let mut store = RootCertStore::empty();
    let (_, skipped) = store.add_parsable_certificates(found.certs);
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "certificate authorities that could not be parsed were skipped"
        );
    }
    if store.is_empty() {
        tracing::warn!(
            "no certificate authority in SSL_CERT_FILE / SSL_CERT_DIR: every TLS connection will be refused"
        );
    }
    store
}

/// The AWS SDK client's trust store: Mozilla's root program, as for [`http_client`], unless
/// `SSL_CERT_FILE` or `SSL_CERT_DIR` names a store of the operator's own, which the SDK then reads
/// (its default, the system store, honours both). The SDK takes certificates only as PEM: the
/// compiled-in roots written as PEM cost about 0.2 ms here and the SDK's reading of them about
/// 0.5 ms, where its own loading of the system store (a bundle read line by line, then a
/// directory of copies) was about 4 ms of every function's cold start (docs/benchmarks.md).
#[cfg(feature = "aws")]
pub fn sdk_trust_store() -> TrustStore {
    if own_store() {
        return TrustStore::default();
    }
    TrustStore::empty().with_pem_certificate(mozilla_roots_pem())
}

/// `webpki-root-certs`' certificates as one PEM text.
#[cfg(feature = "aws")]
fn mozilla_roots_pem() -> Vec<u8> {
    use base64::Engine;

    let certs = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
    let mut pem = String::with_capacity(certs.iter().map(|c| c.len() * 4 / 3 + 64).sum());
    for cert in certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        base64::engine::general_purpose::STANDARD.encode_string(cert, &mut pem);
        pem.push_str("\n-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// A `reqwest` client builder whose TLS runs on ring and trusts the authorities above. Every
/// HTTP client in plumbline starts here, because `reqwest` is built without a provider of its
/// own and would refuse to build otherwise.
pub fn http_client() -> reqwest::ClientBuilder {
    install_provider();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(Arc::clone(&AUTHORITIES))
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration itself (HTTP/1 only here).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

/// Makes ring the process's rustls provider; later calls, and a provider installed first by
/// someone else, leave it as it is.
pub fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn the_sdks_pem_holds_every_mozilla_root_each_a_valid_trust_anchor() {
        // The SDK panics on a certificate it cannot turn into an anchor: every one must parse.
        let pem = super::mozilla_roots_pem();
        let read: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .expect("PEM");
        assert_eq!(read.as_slice(), webpki_root_certs::TLS_SERVER_ROOT_CERTS);
        assert!(read.len() > 100, "{} roots", read.len());
        let mut store = rustls::RootCertStore::empty();
        for cert in read {
            store.add(cert).expect("a trust anchor");
        }
        assert_eq!(store.roots.len(), super::mozilla_roots().roots.len());
    }
}
