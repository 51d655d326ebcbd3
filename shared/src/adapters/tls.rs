//! One TLS stack for every outbound connection: rustls on ring. ring is a fraction of the size
//! of the alternative provider, and binary size is cold-start time on Lambda; the AWS SDK's
//! client is built on the same provider (see `aws_sdk`).

/// A `reqwest` client builder whose TLS runs on ring. Every HTTP client in plumbline starts here,
/// because `reqwest` is built without a provider of its own and would refuse to build otherwise.
pub fn http_client() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder()
}

/// Makes ring the process's rustls provider; later calls, and a provider installed first by
/// someone else, leave it as it is.
pub fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
