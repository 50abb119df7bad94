//! What the network providers share: credentials from the environment and one
//! HTTP client setup (rustls with the ring backend, timeouts, no proxies guessed).

use std::sync::Once;
use std::time::Duration;

use super::ProviderError;

/// Reads a credential from the environment variable a plan names. The value is
/// never put in an error message.
pub fn secret_from_env(var: &str, what: &str) -> Result<String, ProviderError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ProviderError::Invalid {
            what: what.to_owned(),
            message: format!("environment variable `{var}` is not set; export it before running stockshift"),
        }),
    }
}

/// A blocking HTTP client for provider calls. `timeout` bounds each whole request.
pub fn client(timeout: Duration) -> Result<reqwest::blocking::Client, ProviderError> {
    static TLS: Once = Once::new();
    // reqwest is built without a default crypto backend; install ring once per process.
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("stockshift/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Unavailable { what: "http client".into(), message: e.to_string() })
}

/// Whether an HTTP status is worth retrying (throttled or a server-side failure).
pub fn retriable_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_secret_names_the_variable_not_a_value() {
        let e = secret_from_env("STOCKSHIFT_TEST_SURELY_UNSET_VAR", "shopify").unwrap_err().to_string();
        assert!(e.contains("STOCKSHIFT_TEST_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn retriable_statuses() {
        assert!(retriable_status(429) && retriable_status(503) && retriable_status(500));
        assert!(!retriable_status(400) && !retriable_status(401) && !retriable_status(200));
    }
}
