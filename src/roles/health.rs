//! `fraiseql health`: a health probe that needs nothing but the binary, for a `FROM
//! scratch` image's `HEALTHCHECK` (no shell, no curl) and for scripts. It GETs one URL
//! (by default serve's `/healthz` on loopback) and exits 0 on a 2xx answer, 1 otherwise.
//! It reads no configuration: a probe must not fail because a config file it does not
//! need is broken or unreadable.

use std::time::Duration;

/// The outcome of one probe.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{0} is not an http:// or https:// URL")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
}

/// GETs `url` within `timeout`; Ok on a 2xx answer.
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, HealthError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| HealthError::Url(url.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(HealthError::Url(url.to_string()));
    }
    let client = crate::actions::http_client().map_err(HealthError::Client)?;
    let unreachable = |e: reqwest::Error| HealthError::Unreachable {
        url: url.to_string(),
        message: if e.is_timeout() {
            format!("no answer within {} ms", timeout.as_millis())
        } else {
            root_cause(&e)
        },
    };
    let response = client
        .get(parsed)
        .timeout(timeout)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err(HealthError::Status {
            url: url.to_string(),
            status,
        })
    }
}

/// The innermost cause ("Connection refused (os error 111)"): reqwest's own message
/// repeats the URL and says only "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_what_is_not_an_http_url() {
        for bad in ["", "localhost:8080/healthz", "ftp://127.0.0.1/healthz"] {
            assert!(matches!(
                probe(bad, Duration::from_secs(1)).await,
                Err(HealthError::Url(_))
            ));
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/healthz");
        let e = probe(&url, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(&e, HealthError::Unreachable { .. }), "{e}");
        assert!(e.to_string().starts_with(&url), "{e}");
    }
}
