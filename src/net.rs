//! Host-name resolution that works inside an empty root (the `FROM scratch` image).
//!
//! A statically linked glibc `getaddrinfo` needs NSS modules that such an image does not
//! have, so names are resolved here: IP literals as they are, `localhost` to loopback, then
//! `/etc/hosts` and DNS (`/etc/resolv.conf`) through hickory, a pure-Rust resolver. The
//! database pool resolves through [`resolve`] for every new connection, so a service that
//! moves to a new address is found again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use hickory_resolver::TokioResolver;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {host}: {message}")]
    Failed { host: String, message: String },
}

fn resolver() -> Result<&'static TokioResolver, String> {
    static RESOLVER: OnceLock<Result<TokioResolver, String>> = OnceLock::new();
    RESOLVER
        .get_or_init(|| {
            TokioResolver::builder_tokio()
                .and_then(|b| b.build())
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// The addresses of `host`, loopback first for `localhost`.
pub async fn resolve(host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
    }
    let failed = |message: String| ResolveError::Failed {
        host: host.to_string(),
        message,
    };
    let lookup = resolver()
        .map_err(failed)?
        .lookup_ip(host)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let addrs: Vec<IpAddr> = lookup.iter().collect();
    if addrs.is_empty() {
        return Err(failed("no addresses".into()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_localhost_need_no_lookup() {
        assert_eq!(
            resolve("10.1.2.3").await.unwrap(),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            resolve("[::1]").await.unwrap(),
            vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]
        );
        assert_eq!(
            resolve("LocalHost").await.unwrap()[0],
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[tokio::test]
    async fn unknown_names_fail_with_the_name() {
        let e = resolve("no-such-host.invalid")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }
}
