//! `[rate_limit]`: which budgets apply, where they are kept, and what happens when the
//! shared store cannot be reached. Owned by [`crate::ratelimit`]; validated here so `check`
//! and every role refuse the same mistakes before anything listens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::setting::Invalid;

/// Where budgets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// In this process: each instance has its own budget.
    #[default]
    Memory,
    /// In Redis, one atomic script on the server's clock: every instance shares one budget.
    Redis,
}

/// What a request gets when the Redis store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Served unlimited (fail open); `/readyz` and the metrics say the store is down.
    #[default]
    Allow,
    /// Refused with 503 (fail closed); `/readyz` answers 503 too.
    Refuse,
}

/// One budget: a sustained rate and how many requests may arrive at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub requests_per_minute: u32,
    /// Requests allowed at once on a full budget; the sustained rate refills it. Default:
    /// a tenth of a minute's requests (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Rule {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_minute / 10).max(1)
    }

    fn validate(&self, key: &str) -> Result<(), Invalid> {
        if !(1..=6_000_000).contains(&self.requests_per_minute) {
            return Err(Invalid::new(
                format!("{key}.requests_per_minute"),
                "must be between 1 and 6000000",
            ));
        }
        if self.burst == Some(0) || self.burst.is_some_and(|b| b > 1_000_000) {
            return Err(Invalid::new(
                format!("{key}.burst"),
                "must be between 1 and 1000000",
            ));
        }
        Ok(())
    }
}

/// The rules one role has instead of the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleRules {
    pub client: Option<Rule>,
    pub mutations: Option<Rule>,
    pub flight: Option<Rule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub store: Store,
    /// The Redis of `store = "redis"`; empty: `queue.url`.
    pub redis_url: String,
    /// Prefix of every key the limiter writes in Redis.
    pub key_prefix: String,
    pub on_store_error: OnStoreError,
    /// How long a Redis call may take before it counts as the store being down.
    pub store_timeout_ms: u64,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed; the client is then the nearest
    /// address in that header that is not one of them. Empty: the TCP peer, always.
    pub trusted_proxies: Vec<String>,
    /// Keys the memory store tracks at most (about 100 bytes each); past it, all clients
    /// share one budget until idle keys expire.
    pub max_keys: usize,
    /// Per client: the token's `sub`, else the token itself (a static or service token),
    /// else the client's IP address.
    pub client: Option<Rule>,
    /// Per client, mutations only (in addition to `client`).
    pub mutations: Option<Rule>,
    /// Per tenant (the `auth.tenant_claim` value), all its users together.
    pub tenant: Option<Rule>,
    /// Every request of every client together.
    pub global: Option<Rule>,
    /// Per client, Arrow Flight calls (DoGet, DoPut, DoExchange).
    pub flight: Option<Rule>,
    /// Per role: rules that replace `client`, `mutations` or `flight` for that role.
    pub roles: BTreeMap<String, RoleRules>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            store: Store::Memory,
            redis_url: String::new(),
            key_prefix: "fraiseql:ratelimit:".into(),
            on_store_error: OnStoreError::Allow,
            store_timeout_ms: 200,
            trusted_proxies: Vec::new(),
            max_keys: 1_000_000,
            client: None,
            mutations: None,
            tenant: None,
            global: None,
            flight: None,
            roles: BTreeMap::new(),
        }
    }
}

impl RateLimitConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, rule) in [
            ("rate_limit.client", &self.client),
            ("rate_limit.mutations", &self.mutations),
            ("rate_limit.tenant", &self.tenant),
            ("rate_limit.global", &self.global),
            ("rate_limit.flight", &self.flight),
        ] {
            if let Some(rule) = rule {
                rule.validate(key)?;
            }
        }
        for (role, rules) in &self.roles {
            for (name, rule) in [
                ("client", &rules.client),
                ("mutations", &rules.mutations),
                ("flight", &rules.flight),
            ] {
                if let Some(rule) = rule {
                    rule.validate(&format!("rate_limit.roles.{role}.{name}"))?;
                }
            }
        }
        for cidr in &self.trusted_proxies {
            parse_cidr(cidr).map_err(|e| Invalid::new("rate_limit.trusted_proxies", e))?;
        }
        if !(1..=10_000_000).contains(&self.max_keys) {
            return Err(Invalid::new(
                "rate_limit.max_keys",
                "must be between 1 and 10000000",
            ));
        }
        if !(1..=60_000).contains(&self.store_timeout_ms) {
            return Err(Invalid::new(
                "rate_limit.store_timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 200 {
            return Err(Invalid::new("rate_limit.key_prefix", "1 to 200 bytes"));
        }
        Ok(())
    }

    /// The trusted proxy networks (validated, so none is dropped).
    pub fn proxies(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|c| parse_cidr(c).ok())
            .collect()
    }
}

/// A CIDR, or a single address as its own /32 or /128.
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("CIDRs such as 10.0.0.0/8 or addresses, found {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_proxies_are_checked() {
        let mut c = RateLimitConfig::default();
        assert!(c.validate().is_ok());
        c.client = Some(Rule {
            requests_per_minute: 0,
            burst: None,
        });
        assert_eq!(
            c.validate().unwrap_err().key,
            "rate_limit.client.requests_per_minute"
        );
        c.client = Some(Rule {
            requests_per_minute: 60,
            burst: Some(0),
        });
        assert_eq!(c.validate().unwrap_err().key, "rate_limit.client.burst");
        c.client = None;
        c.trusted_proxies = vec!["10.0.0.0/8".into(), "::1".into(), "192.168.1.7".into()];
        assert!(c.validate().is_ok());
        assert_eq!(c.proxies().len(), 3);
        c.trusted_proxies.push("not-a-net".into());
        assert_eq!(c.validate().unwrap_err().key, "rate_limit.trusted_proxies");
    }

    #[test]
    fn burst_defaults_to_a_tenth_of_the_minute() {
        let r = |rpm, burst| Rule {
            requests_per_minute: rpm,
            burst,
        };
        assert_eq!(r(600, None).burst(), 60);
        assert_eq!(r(5, None).burst(), 1);
        assert_eq!(r(600, Some(7)).burst(), 7);
    }
}
