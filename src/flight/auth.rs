//! Who may call the Flight server: bearer tokens checked on every RPC, and the TLS /
//! mutual-TLS server configuration (rustls with the ring provider, through tonic).
//!
//! Every call carries `authorization: Bearer <token>`. Handshake also accepts
//! `authorization: Basic base64(user:token)` — what pyarrow's `authenticate_basic_token`
//! sends — and answers with the bearer header to use, so both client styles work.
//! Tokens are compared in constant time and never logged.

use std::net::SocketAddr;

use base64::Engine;
use subtle::{Choice, ConstantTimeEq};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::config::{ConfigError, FlightConfig};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization header (expected \"authorization: Bearer <token>\")")]
    Missing,
    #[error("malformed authorization header (expected \"Bearer <token>\")")]
    Malformed,
    #[error("invalid bearer token")]
    InvalidToken,
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> tonic::Status {
        tonic::Status::unauthenticated(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "refusing plaintext Flight on non-loopback address {0}: configure flight.tls_cert and \
         flight.tls_key, or set flight.allow_plaintext_non_loopback = true"
    )]
    PlaintextNonLoopback(SocketAddr),
}

/// The accepted tokens.
#[derive(Clone)]
pub struct Tokens {
    tokens: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens([{} redacted])", self.tokens.len())
    }
}

impl Tokens {
    pub fn new(tokens: Vec<String>) -> Tokens {
        Tokens {
            tokens: tokens.into_iter().map(String::into_bytes).collect(),
        }
    }

    /// Each comparison has no early exit (`subtle`), so timing does not reveal how much of a
    /// token matched; and every token is compared, `Choice`s or-ed without short-circuit, so
    /// timing does not reveal which one matched either.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        self.tokens
            .iter()
            .fold(Choice::from(0), |ok, t| ok | t.as_slice().ct_eq(candidate))
            .into()
    }

    fn header(metadata: &MetadataMap) -> Result<&str, AuthError> {
        metadata
            .get("authorization")
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Malformed)
    }

    /// Checks the bearer token of a call.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), AuthError> {
        let value = Self::header(metadata)?;
        let token = strip_scheme(value, "bearer").ok_or(AuthError::Malformed)?;
        if self.accepts(token.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::InvalidToken)
        }
    }

    /// Handshake: a bearer token, or Basic credentials whose password is a token. Returns
    /// the token to hand back as `authorization: Bearer <token>`.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<String, AuthError> {
        let token = handshake_token(metadata)?;
        if self.accepts(token.as_bytes()) {
            Ok(token)
        } else {
            Err(AuthError::InvalidToken)
        }
    }
}

/// The token a Handshake presents: the bearer token, or the password of Basic
/// credentials (the user name is ignored). Not checked here.
pub fn handshake_token(metadata: &MetadataMap) -> Result<String, AuthError> {
    let value = Tokens::header(metadata)?;
    if let Some(t) = strip_scheme(value, "bearer") {
        Ok(t.to_string())
    } else if let Some(b) = strip_scheme(value, "basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| AuthError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (_, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
        Ok(password.to_string())
    } else {
        Err(AuthError::Malformed)
    }
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// The tonic TLS configuration, or None for plaintext (refused off loopback unless allowed).
pub fn tls_config(
    cfg: &FlightConfig,
    local: SocketAddr,
) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        if !local.ip().is_loopback() && !cfg.allow_plaintext_non_loopback {
            return Err(TlsError::PlaintextNonLoopback(local));
        }
        return Ok(None);
    };
    let cert = FlightConfig::read_pem("tls_cert", cert)?;
    let key = FlightConfig::read_pem("tls_key", key)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &cfg.client_ca {
        // tonic requires the client certificate whenever a client CA is set
        // (client_auth_optional defaults to false); said explicitly here.
        tls = tls
            .client_ca_root(Certificate::from_pem(FlightConfig::read_pem(
                "client_ca",
                ca,
            )?))
            .client_auth_optional(false);
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn bearer_tokens() {
        let t = Tokens::new(vec!["alpha".into(), "beta".into()]);
        assert!(t.check(&md("Bearer beta")).is_ok());
        assert!(t.check(&md("bearer alpha")).is_ok());
        assert!(matches!(
            t.check(&md("Bearer gamma")),
            Err(AuthError::InvalidToken)
        ));
        assert!(matches!(t.check(&md("beta")), Err(AuthError::Malformed)));
        assert!(matches!(
            t.check(&MetadataMap::new()),
            Err(AuthError::Missing)
        ));
        assert!(!format!("{t:?}").contains("alpha"));
    }

    #[test]
    fn only_a_whole_token_matches() {
        let t = Tokens::new(vec!["alpha".into(), "beta".into()]);
        for near in ["alph", "alphaa", "Alpha", "bet", "betax", "", "alphabeta"] {
            assert!(!t.accepts(near.as_bytes()), "{near:?}");
        }
        assert!(t.accepts(b"alpha") && t.accepts(b"beta"));
        assert!(!Tokens::new(vec![]).accepts(b""));
    }

    #[test]
    fn handshake_accepts_basic_with_token_password() {
        let t = Tokens::new(vec!["alpha".into()]);
        let basic = base64::engine::general_purpose::STANDARD.encode("user:alpha");
        assert_eq!(
            t.handshake(&md(&format!("Basic {basic}"))).unwrap(),
            "alpha"
        );
        let bad = base64::engine::general_purpose::STANDARD.encode("user:nope");
        assert!(t.handshake(&md(&format!("Basic {bad}"))).is_err());
    }

    #[test]
    fn plaintext_only_on_loopback() {
        let cfg = FlightConfig {
            tokens: vec!["t".into()],
            ..Default::default()
        };
        assert!(
            tls_config(&cfg, "127.0.0.1:1".parse().unwrap())
                .unwrap()
                .is_none()
        );
        let e = tls_config(&cfg, "0.0.0.0:1".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("allow_plaintext_non_loopback"));
        let allowed = FlightConfig {
            allow_plaintext_non_loopback: true,
            ..cfg
        };
        assert!(
            tls_config(&allowed, "0.0.0.0:1".parse().unwrap())
                .unwrap()
                .is_none()
        );
    }
}
