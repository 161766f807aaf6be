//! Rate limits: budgets per client, per tenant, for mutations, for Flight calls and for
//! everyone together, checked before anything runs. Both doors (HTTP GraphQL and Arrow
//! Flight) ask one [`RateLimiter`] with the request's [`Identity`] and network address and get
//! a [`Verdict`]; a refused request gets HTTP 429 (`RATE_LIMITED`, `Retry-After`,
//! `RateLimit`/`RateLimit-Policy`) or Flight `RESOURCE_EXHAUSTED`.
//!
//! Budgets are GCRA cells kept by a [`Store`]: [`memory`] (governor, in this process) or
//! [`redis`] (one Lua script on the server's clock, so several instances share one budget).
//! When Redis cannot be reached, `on_store_error` decides: serve unlimited (fail open) or
//! refuse with 503 (fail closed); either way `/readyz` and `fraiseql_rate_limit_store_up`
//! say so.

pub mod config;
mod memory;
mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sha2::Digest as _;

pub use config::{OnStoreError, RateLimitConfig, Rule};

use crate::auth::Identity;

/// One budget's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests the budget still allows at once.
    pub remaining: u32,
    /// Until the budget is full again.
    pub reset: Duration,
    /// When refused: until one request would be allowed.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the rate-limit store failed: {0}")]
    Failed(String),
    #[error("the rate-limit store did not answer in time")]
    Timeout,
    #[error("the rate-limit store's URL is not valid: {0}")]
    Url(String),
}

/// Where budgets are kept. `key` is unique per rule and client; `rule` is the budget.
pub trait Store: Send + Sync {
    fn name(&self) -> &'static str;
    fn check<'a>(&'a self, key: &'a str, rule: Rule)
    -> BoxFuture<'a, Result<Decision, StoreError>>;
    /// Whether the store answers (`/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The TCP peer of an HTTP request, put in its extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// What is being asked for; each has its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A GraphQL request: `global`, `client`, `tenant`.
    Request,
    /// A GraphQL mutation, on top of [`Scope::Request`]: `mutations`.
    Mutation,
    /// A Flight call: `global`, `flight`.
    Flight,
}

/// Who asks.
pub struct Caller<'a> {
    pub identity: &'a Identity,
    /// The bearer token as sent, when there is one: the client of a token without a `sub`.
    pub token: Option<&'a str>,
    /// The client's address (see [`client_addr`]).
    pub addr: IpAddr,
}

/// The budgets a request was checked against, for the response headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    entries: Vec<(&'static str, Rule, Decision)>,
}

impl Checked {
    /// Adds the budgets of a later check (a mutation's, after the request's).
    pub fn extend(&mut self, other: Checked) {
        self.entries.extend(other.entries);
    }

    /// `RateLimit-Policy` (IETF httpapi draft): each policy's quota per 60-second window.
    pub fn policy_header(&self) -> Option<String> {
        (!self.entries.is_empty()).then(|| {
            self.entries
                .iter()
                .map(|(name, rule, _)| format!("\"{name}\";q={};w=60", rule.requests_per_minute))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// `RateLimit`: what each policy still allows and when it is full again (seconds).
    pub fn state_header(&self) -> Option<String> {
        (!self.entries.is_empty()).then(|| {
            self.entries
                .iter()
                .map(|(name, _, d)| {
                    format!("\"{name}\";r={};t={}", d.remaining, ceil_secs(d.reset))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// Seconds until every refused budget allows a request again.
    pub fn retry_after_secs(&self) -> u64 {
        self.entries
            .iter()
            .filter(|(_, _, d)| !d.allowed)
            .map(|(_, _, d)| ceil_secs(d.retry_after).max(1))
            .max()
            .unwrap_or(1)
    }

    /// The budget that refused, for the error message.
    pub fn refused_by(&self) -> Option<&'static str> {
        self.entries
            .iter()
            .find(|(_, _, d)| !d.allowed)
            .map(|(n, _, _)| *n)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// The limiter's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it; the headers describe the budgets it was checked against.
    Allowed(Checked),
    /// Over a budget: nothing runs.
    Limited(Checked),
    /// The store is down and `on_store_error = "refuse"`.
    Unavailable,
}

pub struct RateLimiter {
    config: RateLimitConfig,
    proxies: Vec<ipnet::IpNet>,
    tenant_claim: Option<String>,
    store: Arc<dyn Store>,
    store_up: AtomicBool,
    timeout: Duration,
}

impl RateLimiter {
    /// The limiter of `config`, or `None` when it sets no rule. `queue_url` is the Redis of
    /// `store = "redis"` when `redis_url` is empty; `tenant_claim` the path of the tenant.
    pub fn new(
        config: &RateLimitConfig,
        queue_url: &str,
        tenant_claim: Option<&str>,
    ) -> Result<Option<Arc<RateLimiter>>, StoreError> {
        let mut rules: Vec<Rule> = [
            config.client,
            config.mutations,
            config.tenant,
            config.global,
            config.flight,
        ]
        .into_iter()
        .flatten()
        .collect();
        for r in config.roles.values() {
            rules.extend([r.client, r.mutations, r.flight].into_iter().flatten());
        }
        if rules.is_empty() {
            return Ok(None);
        }
        let store: Arc<dyn Store> = match config.store {
            config::Store::Memory => Arc::new(memory::MemoryStore::new(&rules, config.max_keys)),
            config::Store::Redis => {
                let url = if config.redis_url.is_empty() {
                    queue_url
                } else {
                    &config.redis_url
                };
                Arc::new(redis::RedisStore::new(
                    url,
                    &config.key_prefix,
                    Duration::from_millis(config.store_timeout_ms),
                )?)
            }
        };
        let m = crate::metrics::metrics();
        m.rate_limit.store_up.set(1);
        Ok(Some(Arc::new(RateLimiter {
            proxies: config.proxies(),
            tenant_claim: tenant_claim.map(str::to_owned),
            store,
            store_up: AtomicBool::new(true),
            timeout: Duration::from_millis(config.store_timeout_ms),
            config: config.clone(),
        })))
    }

    /// Asks the store whether it answers (and records the answer), for `/readyz`: the
    /// error, with what requests get meanwhile.
    pub async fn probe(&self) -> Result<(), (StoreError, OnStoreError)> {
        let answer = tokio::time::timeout(self.timeout, self.store.ping())
            .await
            .unwrap_or(Err(StoreError::Timeout));
        match answer {
            Ok(()) => {
                self.set_store_up(true);
                Ok(())
            }
            Err(e) => {
                self.store_up.store(false, Ordering::Relaxed);
                crate::metrics::metrics().rate_limit.store_up.set(0);
                Err((e, self.config.on_store_error))
            }
        }
    }

    /// Whether mutations have a budget of their own (the engine then asks before running one).
    pub fn limits_mutations(&self) -> bool {
        self.config.mutations.is_some() || self.config.roles.values().any(|r| r.mutations.is_some())
    }

    /// The client's address: the TCP peer, unless it is a trusted proxy.
    pub fn client_addr<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        client_addr(peer, forwarded_for, &self.proxies)
    }

    /// Checks every rule of `scope` for `caller`; each budget checked is spent.
    pub async fn admit(&self, caller: &Caller<'_>, scope: Scope) -> Verdict {
        let role = caller.identity.role();
        let per_role = self.config.roles.get(role);
        let client = client_key(caller);
        let mut checks: Vec<(&'static str, Rule, String)> = Vec::with_capacity(3);
        match scope {
            Scope::Request => {
                if let Some(r) = self.config.global {
                    checks.push(("global", r, "global".into()));
                }
                if let Some(r) = per_role.and_then(|p| p.client).or(self.config.client) {
                    checks.push(("client", r, client));
                }
                if let (Some(r), Some(tenant)) = (self.config.tenant, self.tenant(caller)) {
                    checks.push(("tenant", r, tenant));
                }
            }
            Scope::Mutation => {
                if let Some(r) = per_role.and_then(|p| p.mutations).or(self.config.mutations) {
                    checks.push(("mutations", r, client));
                }
            }
            Scope::Flight => {
                if let Some(r) = self.config.global {
                    checks.push(("global", r, "global".into()));
                }
                if let Some(r) = per_role.and_then(|p| p.flight).or(self.config.flight) {
                    checks.push(("flight", r, client));
                }
            }
        }
        let m = &crate::metrics::metrics().rate_limit;
        let mut checked = Checked::default();
        for (name, rule, key) in checks {
            let key = format!("{name}:{key}");
            let answer = tokio::time::timeout(self.timeout, self.store.check(&key, rule))
                .await
                .unwrap_or(Err(StoreError::Timeout));
            match answer {
                Ok(d) => {
                    self.set_store_up(true);
                    m.decisions
                        .with_label_values(&[name, if d.allowed { "allowed" } else { "limited" }])
                        .inc();
                    checked.entries.push((name, rule, d));
                }
                Err(e) => {
                    if self.store_up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(target: "fraiseql::ratelimit", store = self.store.name(), error = %e, "rate-limit store unreachable");
                    }
                    m.store_up.set(0);
                    m.decisions.with_label_values(&[name, "store_error"]).inc();
                    if self.config.on_store_error == OnStoreError::Refuse {
                        return Verdict::Unavailable;
                    }
                }
            }
        }
        if checked.refused_by().is_some() {
            Verdict::Limited(checked)
        } else {
            Verdict::Allowed(checked)
        }
    }

    fn set_store_up(&self, up: bool) {
        if !self.store_up.swap(up, Ordering::Relaxed) && up {
            tracing::info!(target: "fraiseql::ratelimit", store = self.store.name(), "rate-limit store reachable again");
            crate::metrics::metrics().rate_limit.store_up.set(1);
        }
    }

    fn tenant(&self, caller: &Caller<'_>) -> Option<String> {
        let v = caller.identity.claim(self.tenant_claim.as_deref()?)?;
        crate::auth::claims::as_setting(v).map(|t| bounded_key("t", &t))
    }
}

/// The client a budget is kept for: the token's subject, else the token itself (hashed),
/// else the address.
fn client_key(caller: &Caller<'_>) -> String {
    if let Some(sub) = caller.identity.subject() {
        return bounded_key("sub", sub);
    }
    if let Some(token) = caller.token {
        let digest = sha2::Sha256::digest(token.as_bytes());
        return format!("tok:{}", hex(&digest[..16]));
    }
    format!("ip:{}", caller.addr)
}

/// `kind:value`, with a long or odd value hashed so keys stay short and printable.
fn bounded_key(kind: &str, value: &str) -> String {
    if value.len() <= 128 && value.chars().all(|c| c.is_ascii_graphic()) {
        format!("{kind}:{value}")
    } else {
        let digest = sha2::Sha256::digest(value.as_bytes());
        format!("{kind}#{}", hex(&digest[..16]))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client's address. A peer that is not a trusted proxy is the client, whatever it
/// claims in `X-Forwarded-For`. Behind trusted proxies, the header is read from the right
/// (the hop nearest to us) and the first address that is not a trusted proxy is the client;
/// an entry that is not an address ends the walk at the hop that added it.
pub fn client_addr<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    proxies: &[ipnet::IpNet],
) -> IpAddr {
    let trusted = |a: &IpAddr| proxies.iter().any(|n| n.contains(a));
    if !trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(a) => {
                client = a;
                if !trusted(&a) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<ipnet::IpNet> {
        s.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxies = nets(&["10.0.0.0/8"]);
        // An untrusted peer is the client, whatever the header says.
        assert_eq!(
            client_addr(ip("203.0.113.9"), ["1.2.3.4"].into_iter(), &proxies),
            ip("203.0.113.9")
        );
        // Nothing trusted by default.
        assert_eq!(
            client_addr(ip("10.0.0.1"), ["1.2.3.4"].into_iter(), &[]),
            ip("10.0.0.1")
        );
        // Behind two trusted hops: the nearest untrusted address; a spoofed left part is
        // never reached.
        assert_eq!(
            client_addr(
                ip("10.0.0.1"),
                ["6.6.6.6, 198.51.100.7", "10.1.1.1"].into_iter(),
                &proxies
            ),
            ip("198.51.100.7")
        );
        // Garbage stops at the hop that added it.
        assert_eq!(
            client_addr(ip("10.0.0.1"), ["nonsense, 10.2.2.2"].into_iter(), &proxies),
            ip("10.2.2.2")
        );
        assert_eq!(
            client_addr(ip("10.0.0.1"), std::iter::empty(), &proxies),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn headers_follow_the_draft() {
        let rule = Rule {
            requests_per_minute: 600,
            burst: Some(10),
        };
        let d = |allowed, remaining, reset_ms, retry_ms| Decision {
            allowed,
            remaining,
            reset: Duration::from_millis(reset_ms),
            retry_after: Duration::from_millis(retry_ms),
        };
        let c = Checked {
            entries: vec![
                ("global", rule, d(true, 9, 100, 0)),
                ("client", rule, d(false, 0, 1000, 1500)),
            ],
        };
        assert_eq!(
            c.policy_header().unwrap(),
            "\"global\";q=600;w=60, \"client\";q=600;w=60"
        );
        assert_eq!(
            c.state_header().unwrap(),
            "\"global\";r=9;t=1, \"client\";r=0;t=1"
        );
        assert_eq!(c.retry_after_secs(), 2);
        assert_eq!(c.refused_by(), Some("client"));
        assert_eq!(Checked::default().policy_header(), None);
    }

    #[tokio::test]
    async fn a_role_rule_replaces_the_default_and_each_subject_has_its_own_budget() {
        let mut roles = std::collections::BTreeMap::new();
        roles.insert(
            "admin".to_owned(),
            config::RoleRules {
                client: Some(Rule {
                    requests_per_minute: 60,
                    burst: Some(3),
                }),
                ..Default::default()
            },
        );
        let cfg = RateLimitConfig {
            client: Some(Rule {
                requests_per_minute: 60,
                burst: Some(1),
            }),
            roles,
            ..Default::default()
        };
        let rl = RateLimiter::new(&cfg, "", None).unwrap().unwrap();
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let admin = Identity::principal("root", "admin", &[]).unwrap();
        let user = Identity::principal("alice", "user", &[]).unwrap();
        let other = Identity::principal("bob", "user", &[]).unwrap();
        let ask = |identity| {
            let rl = &rl;
            async move {
                let caller = Caller {
                    identity,
                    token: None,
                    addr,
                };
                matches!(rl.admit(&caller, Scope::Request).await, Verdict::Allowed(_))
            }
        };
        let mut admin_seen = Vec::new();
        for _ in 0..4 {
            admin_seen.push(ask(&admin).await);
        }
        assert_eq!(admin_seen, [true, true, true, false]);
        assert!(ask(&user).await);
        assert!(!ask(&user).await);
        // Same address, other subject: its own budget.
        assert!(ask(&other).await);
        // No rule at all: no limiter.
        assert!(
            RateLimiter::new(&RateLimitConfig::default(), "", None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn keys_are_short_and_printable() {
        assert_eq!(bounded_key("sub", "alice"), "sub:alice");
        let long = bounded_key("sub", &"x".repeat(500));
        assert!(long.starts_with("sub#") && long.len() == 4 + 32);
        assert!(bounded_key("t", "a b\n").starts_with("t#"));
    }
}
