//! Host-name resolution that works inside an empty root (the `FROM scratch` image).
//!
//! A statically linked glibc `getaddrinfo` needs NSS modules that such an image does not
//! have, so names are resolved here: IP literals as they are, `localhost` (and any name
//! under it, RFC 6761) to loopback, then
//! `/etc/hosts` and DNS (`/etc/resolv.conf`) through hickory, a pure-Rust resolver.
//!
//! Every network client goes through this module, never through libc, and resolves again
//! for every new connection, so a service that moves to a new address is found again:
//!
//! * PostgreSQL: the pool resolves with [`resolve`] before each connect (`crate::db`);
//! * Redis: [`Resolver`] is the connections' DNS resolver, and the queue's pub/sub
//!   connection is opened with [`connect_tcp`];
//! * HTTP (webhook, Slack, search): [`Resolver`] is every `reqwest` client's resolver;
//! * NATS: async-nats has no resolver hook, so [`crate::nats`] hands it the addresses
//!   resolved here ([`socket_addrs`]) and verifies TLS certificates against the name;
//! * SMTP: the e-mail action connects to an address resolved here, TLS checked against
//!   the configured host name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

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

/// `localhost` and every name under it (`redis.localhost`): loopback without a lookup, as
/// RFC 6761 asks (libc only knows what `/etc/hosts` lists, and an empty root has none).
fn is_localhost(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let Some(split) = host.len().checked_sub("localhost".len()) else {
        return false;
    };
    host.is_char_boundary(split)
        && host[split..].eq_ignore_ascii_case("localhost")
        && (split == 0 || host[..split].ends_with('.'))
}

/// The addresses of `host`, loopback first for `localhost` (and `*.localhost`).
pub async fn resolve(host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if is_localhost(bare) {
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

/// The socket addresses of `host:port`, in [`resolve`]'s order.
pub async fn socket_addrs(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    Ok(resolve(host)
        .await?
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot connect to {host}:{port}: {source}")]
    Io {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot connect to {host}:{port}: timed out after {} ms", .after.as_millis())]
    Timeout {
        host: String,
        port: u16,
        after: Duration,
    },
}

/// A TCP connection to the first address of `host` that accepts one, each attempt bounded
/// by `timeout`; the error is the last address's.
pub async fn connect_tcp(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, ConnectError> {
    let mut last = None;
    for addr in socket_addrs(host, port).await? {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(source)) => {
                last = Some(ConnectError::Io {
                    host: host.to_string(),
                    port,
                    source,
                });
            }
            Err(_) => {
                last = Some(ConnectError::Timeout {
                    host: host.to_string(),
                    port,
                    after: timeout,
                });
            }
        }
    }
    // `resolve` never returns an empty list, so `last` is set.
    Err(last.unwrap_or_else(|| {
        ConnectError::Resolve(ResolveError::Failed {
            host: host.to_string(),
            message: "no addresses".into(),
        })
    }))
}

/// [`resolve`] in the shape the clients with a resolver hook want (Redis, reqwest).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolver;

impl redis::io::AsyncDNSResolver for Resolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            // An I/O error of kind `Other`: redis-rs (and the queue) treat it as transient, as
            // they do a failed libc lookup, so a name that is not there yet is waited for.
            let addrs = socket_addrs(host, port)
                .await
                .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port (or the scheme's).
            let addrs = socket_addrs(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a server's certificate against the *name* an address was resolved from, for
/// clients that are handed resolved addresses instead of names (NATS): the client sees an IP
/// address as the server name, and verifying against that would refuse every certificate
/// issued for a name. An address with no recorded name is verified as itself.
#[derive(Debug)]
pub struct ResolvedNameVerifier {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    names: std::collections::HashMap<IpAddr, Vec<rustls::pki_types::ServerName<'static>>>,
}

impl ResolvedNameVerifier {
    /// Trusts `roots`, and checks each address in `names` against the names it was resolved
    /// from (a certificate valid for any of them passes). `None` without roots: nothing could
    /// be verified (the client's own configuration fails the same way).
    pub fn new(
        roots: std::sync::Arc<rustls::RootCertStore>,
        names: std::collections::HashMap<IpAddr, Vec<String>>,
    ) -> Option<Self> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .ok()?;
        let names = names
            .into_iter()
            .map(|(ip, hosts)| {
                let hosts = hosts
                    .into_iter()
                    .filter_map(|h| rustls::pki_types::ServerName::try_from(h).ok())
                    .collect();
                (ip, hosts)
            })
            .collect();
        Some(ResolvedNameVerifier { inner, names })
    }

    /// A TLS client configuration (ring, safe default versions, no client certificate)
    /// verifying with [`ResolvedNameVerifier::new`]`(roots, names)`.
    pub fn client_config(
        roots: std::sync::Arc<rustls::RootCertStore>,
        names: std::collections::HashMap<IpAddr, Vec<String>>,
    ) -> Option<rustls::ClientConfig> {
        let verifier = Self::new(roots, names)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        Some(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
                .with_no_client_auth(),
        )
    }
}

impl rustls::client::danger::ServerCertVerifier for ResolvedNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let names = match server_name {
            rustls::pki_types::ServerName::IpAddress(ip) => self.names.get(&IpAddr::from(*ip)),
            _ => None,
        };
        let Some(names) = names.filter(|n| !n.is_empty()) else {
            return self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        };
        let mut last = None;
        for name in names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(ok) => return Ok(ok),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General("no server name".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
    #[test]
    fn names_under_localhost_are_loopback_names() {
        for name in [
            "localhost",
            "LocalHost",
            "localhost.",
            "redis.localhost",
            "a.b.LOCALHOST",
        ] {
            assert!(is_localhost(name), "{name}");
        }
        for name in [
            "",
            "xlocalhost",
            "localhost.example",
            "local",
            "host",
            "é.localhos",
        ] {
            assert!(!is_localhost(name), "{name}");
        }
    }

    #[tokio::test]
    async fn the_client_hooks_resolve_through_this_module() {
        use redis::io::AsyncDNSResolver;
        use reqwest::dns::Resolve;
        let by_redis: Vec<SocketAddr> =
            AsyncDNSResolver::resolve(&Resolver, "redis.localhost", 6379)
                .await
                .unwrap()
                .collect();
        assert_eq!(by_redis[0], "127.0.0.1:6379".parse().unwrap());
        let by_http: Vec<SocketAddr> =
            Resolve::resolve(&Resolver, "web.localhost".parse().unwrap())
                .await
                .unwrap()
                .collect();
        assert_eq!(by_http[0], "127.0.0.1:0".parse().unwrap());
        let e = AsyncDNSResolver::resolve(&Resolver, "no-such-host.invalid", 1)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    }

    #[tokio::test]
    async fn connect_tcp_reaches_a_name_and_reports_the_last_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = connect_tcp("svc.localhost", port, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap().port(), port);
        drop(listener);
        let e = connect_tcp("svc.localhost", port, Duration::from_secs(2))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("svc.localhost:{port}")), "{e}");
    }

    /// A CA, and a server certificate it signed for `names`.
    fn ca_and_server_cert(
        names: &[&str],
    ) -> (
        std::sync::Arc<rustls::RootCertStore>,
        rustls::pki_types::CertificateDer<'static>,
    ) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        (std::sync::Arc::new(roots), cert.der().clone())
    }

    #[test]
    fn certificates_are_checked_against_the_name_an_address_came_from() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let (roots, cert) = ca_and_server_cert(&["nats.example"]);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let check = |names: &[&str], addr: IpAddr| {
            let map =
                std::iter::once((ip, names.iter().map(|n| n.to_string()).collect())).collect();
            ResolvedNameVerifier::new(roots.clone(), map)
                .unwrap()
                .verify_server_cert(&cert, &[], &ServerName::from(addr), &[], UnixTime::now())
        };
        // The client connected to 10.0.0.7, resolved from nats.example: valid.
        check(&["nats.example"], ip).expect("valid for the name the address came from");
        // Two names on one address: valid for either is enough.
        check(&["other.example", "nats.example"], ip).expect("valid for one of the names");
        // Resolved from another name: the certificate does not fit it.
        let e = check(&["evil.example"], ip).unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
        // An address nothing was resolved to is checked as itself (and fails: no IP SAN).
        check(&["nats.example"], "10.0.0.8".parse().unwrap()).unwrap_err();
        // No roots, no verifier (the client's own configuration fails the same way).
        assert!(
            ResolvedNameVerifier::new(
                std::sync::Arc::new(rustls::RootCertStore::empty()),
                std::collections::HashMap::new()
            )
            .is_none()
        );
    }
}
