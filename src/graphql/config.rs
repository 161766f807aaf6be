//! `[graphql]`: which schema the endpoint serves, GraphiQL, persisted documents (the
//! trusted-documents allow-list and Apollo APQ, [`DocumentsConfig`]) and the request limits.
//! The limits are the engine's own [`Limits`], read from the same table: one list of fields,
//! one set of defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Limits;
use crate::setting::{Invalid, at_least_one};

/// `[graphql]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphqlConfig {
    /// `schema.json` (as the SDKs export it) or `schema.compiled.json`; empty = no `/graphql`.
    pub schema: String,
    /// Serve GraphiQL at `/graphiql`.
    pub graphiql: bool,
    /// Read a view's table-backed copy `tv_<entity>` (from `fraiseql generate-views`) in
    /// place of `v_<entity>` when it exists and can stand in for it.
    pub read_tables: bool,
    /// `trusted_documents*` and `apq*`: which documents may run, and the APQ cache.
    pub documents: DocumentsConfig,
    /// Every other key of the section (`max_depth`, `max_limit`, `introspection`, …).
    pub limits: Limits,
    /// `[graphql.roles.<role>]`: limits that replace the section's for requests of that
    /// role (the token's role claim), and a statement timeout of their own.
    pub roles: BTreeMap<String, RoleLimits>,
}

/// The limits one role has instead of the section's; unset keys keep the section's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleLimits {
    pub max_depth: Option<usize>,
    pub max_aliases: Option<usize>,
    pub max_root_fields: Option<usize>,
    pub default_limit: Option<i64>,
    pub max_limit: Option<i64>,
    pub max_list_input: Option<usize>,
    pub max_filter_depth: Option<usize>,
    pub max_filter_conditions: Option<usize>,
    /// `statement_timeout` of the role's requests (set in their transaction); a statement
    /// that runs longer is cancelled and answered `TIMEOUT`.
    pub statement_timeout_ms: Option<u64>,
}

impl RoleLimits {
    /// `base` with this role's values in place.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            max_depth: self.max_depth.unwrap_or(base.max_depth),
            max_aliases: self.max_aliases.unwrap_or(base.max_aliases),
            max_root_fields: self.max_root_fields.unwrap_or(base.max_root_fields),
            default_limit: self.default_limit.unwrap_or(base.default_limit),
            max_limit: self.max_limit.unwrap_or(base.max_limit),
            max_list_input: self.max_list_input.unwrap_or(base.max_list_input),
            max_filter_depth: self.max_filter_depth.unwrap_or(base.max_filter_depth),
            max_filter_conditions: self
                .max_filter_conditions
                .unwrap_or(base.max_filter_conditions),
            ..base
        }
    }
}

/// The persisted-document keys of `[graphql]` (see [`super::persisted`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// The trusted-documents manifest (Apollo's persisted query manifest, or a JSON object
    /// of SHA-256 → document); set = allow-list mode: only its documents run. Empty = off.
    pub trusted_documents: String,
    /// Roles (the token's role claim) that may still send any document in allow-list mode.
    pub trusted_documents_bypass_roles: Vec<String>,
    /// Largest manifest file accepted, in bytes.
    pub trusted_documents_max_bytes: usize,
    /// Apollo automatic persisted queries when the allow-list is off: a client may send only
    /// a document's hash once the server has seen the document with it.
    pub apq: bool,
    /// Bound of the APQ cache (document text), in bytes; the least recently used go first.
    pub apq_cache_bytes: usize,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            trusted_documents: String::new(),
            trusted_documents_bypass_roles: Vec::new(),
            trusted_documents_max_bytes: 16 << 20,
            apq: true,
            apq_cache_bytes: 16 << 20,
        }
    }
}

impl DocumentsConfig {
    /// The section keys this struct reads.
    const KEYS: [&'static str; 5] = [
        "trusted_documents",
        "trusted_documents_bypass_roles",
        "trusted_documents_max_bytes",
        "apq",
        "apq_cache_bytes",
    ];

    /// Whether the allow-list is on.
    pub fn allow_list(&self) -> bool {
        !self.trusted_documents.is_empty()
    }

    fn validate(&self) -> Result<(), Invalid> {
        if self.allow_list() && !std::path::Path::new(&self.trusted_documents).is_file() {
            return Err(Invalid::new(
                "graphql.trusted_documents",
                format!("{} is not a readable file", self.trusted_documents),
            ));
        }
        if !self.allow_list() && !self.trusted_documents_bypass_roles.is_empty() {
            return Err(Invalid::new(
                "graphql.trusted_documents_bypass_roles",
                "has no effect without graphql.trusted_documents (the allow-list is off)",
            ));
        }
        if let Some(r) = self
            .trusted_documents_bypass_roles
            .iter()
            .find(|r| r.trim().is_empty())
        {
            return Err(Invalid::new(
                "graphql.trusted_documents_bypass_roles",
                format!("expected role names, got {r:?}"),
            ));
        }
        at_least_one(&[
            (
                "graphql.trusted_documents_max_bytes",
                self.trusted_documents_max_bytes,
            ),
            ("graphql.apq_cache_bytes", self.apq_cache_bytes),
        ])
    }
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        GraphqlConfig {
            schema: String::new(),
            graphiql: true,
            read_tables: false,
            documents: DocumentsConfig::default(),
            limits: Limits::default(),
            roles: BTreeMap::new(),
        }
    }
}

/// The keys of the section that are not limits.
#[derive(Serialize, Deserialize)]
#[serde(default)]
struct Own {
    schema: String,
    graphiql: bool,
    read_tables: bool,
    roles: BTreeMap<String, RoleLimits>,
}

impl Default for Own {
    fn default() -> Self {
        let d = GraphqlConfig::default();
        Own {
            schema: d.schema,
            graphiql: d.graphiql,
            read_tables: d.read_tables,
            roles: d.roles,
        }
    }
}

impl<'de> Deserialize<'de> for GraphqlConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The section's own keys come off the table first; the rest must be limits (an
        // unknown key is refused there, naming the limits expected).
        let mut table = toml::Table::deserialize(d)?;
        let take = |table: &mut toml::Table, keys: &[&str]| {
            let mut taken = toml::Table::new();
            for key in keys {
                if let Some(v) = table.remove(*key) {
                    taken.insert((*key).to_owned(), v);
                }
            }
            taken
        };
        let own: Own = take(&mut table, &["schema", "graphiql", "read_tables", "roles"])
            .try_into()
            .map_err(serde::de::Error::custom)?;
        let documents: DocumentsConfig = take(&mut table, &DocumentsConfig::KEYS)
            .try_into()
            .map_err(serde::de::Error::custom)?;
        let limits: Limits = table.try_into().map_err(|e: toml::de::Error| {
            serde::de::Error::custom(e.message().replace(
                "expected one of",
                &format!(
                    "expected schema, graphiql, read_tables, roles, {} or one of",
                    DocumentsConfig::KEYS.join(", ")
                ),
            ))
        })?;
        Ok(GraphqlConfig {
            schema: own.schema,
            graphiql: own.graphiql,
            read_tables: own.read_tables,
            documents,
            limits,
            roles: own.roles,
        })
    }
}

impl Serialize for GraphqlConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut table = toml::Table::try_from(Own {
            schema: self.schema.clone(),
            graphiql: self.graphiql,
            read_tables: self.read_tables,
            roles: self.roles.clone(),
        })
        .map_err(serde::ser::Error::custom)?;
        let documents =
            toml::Table::try_from(&self.documents).map_err(serde::ser::Error::custom)?;
        let limits = toml::Table::try_from(self.limits).map_err(serde::ser::Error::custom)?;
        table.extend(documents);
        table.extend(limits);
        table.serialize(s)
    }
}

impl GraphqlConfig {
    /// The engine's limits, with the body bound of `[server]`.
    pub fn limits(&self, max_body_bytes: usize) -> Limits {
        Limits {
            max_body_bytes,
            ..self.limits
        }
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.schema.is_empty() && !std::path::Path::new(&self.schema).is_file() {
            return Err(Invalid::new(
                "graphql.schema",
                format!("{} is not a readable file", self.schema),
            ));
        }
        self.documents.validate()?;
        check_limits("graphql", &self.limits)?;
        for (role, r) in &self.roles {
            let key = format!("graphql.roles.{role}");
            if role.is_empty() || role.len() > 63 {
                return Err(Invalid::new(key, "role names of 1 to 63 bytes"));
            }
            check_limits(&key, &r.apply(self.limits))?;
            if r.statement_timeout_ms == Some(0) || r.statement_timeout_ms > Some(86_400_000) {
                return Err(Invalid::new(
                    format!("{key}.statement_timeout_ms"),
                    "must be between 1 and 86400000",
                ));
            }
        }
        Ok(())
    }
}

fn check_limits(section: &str, l: &Limits) -> Result<(), Invalid> {
    if l.default_limit < 1 || l.default_limit > l.max_limit {
        return Err(Invalid::new(
            format!("{section}.default_limit"),
            format!(
                "must be between 1 and {section}.max_limit ({})",
                l.max_limit
            ),
        ));
    }
    at_least_one(&[
        ("max_depth", l.max_depth),
        ("max_tokens", l.max_tokens),
        ("max_fields", l.max_fields),
        ("max_query_bytes", l.max_query_bytes),
        ("max_root_fields", l.max_root_fields),
    ])
    .map_err(|e| Invalid::new(format!("{section}.{}", e.key), e.expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_reads_into_the_engine_limits() {
        let c: GraphqlConfig = toml::from_str(
            "schema = \"s.json\"\ngraphiql = false\nmax_depth = 7\nintrospection = false",
        )
        .unwrap();
        assert_eq!(c.schema, "s.json");
        assert!(!c.graphiql);
        assert_eq!(c.limits.max_depth, 7);
        assert!(!c.limits.introspection);
        assert_eq!(c.limits.max_limit, Limits::default().max_limit);
        assert_eq!(c.limits(4096).max_body_bytes, 4096);
        assert!(c.documents.apq && !c.documents.allow_list());
        let c: GraphqlConfig = toml::from_str(
            "trusted_documents = \"m.json\"\ntrusted_documents_bypass_roles = [\"dev\"]\napq = false",
        )
        .unwrap();
        assert!(c.documents.allow_list() && !c.documents.apq);
        assert_eq!(c.documents.trusted_documents_bypass_roles, ["dev"]);
        let e = toml::from_str::<GraphqlConfig>("apq = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apq") || e.contains("bool"), "{e}");
        let e = toml::from_str::<GraphqlConfig>("trusted_document = \"m.json\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("trusted_documents,"), "{e}");
        let e = toml::from_str::<GraphqlConfig>("max_dept = 7")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_dept") && e.contains("max_depth"), "{e}");
        let e = toml::from_str::<GraphqlConfig>("max_depth = \"deep\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_depth") || e.contains("usize"), "{e}");
    }

    #[test]
    fn roles_replace_some_limits() {
        let c: GraphqlConfig = toml::from_str(
            "max_limit = 100\n[roles.analyst]\nmax_limit = 10000\nstatement_timeout_ms = 50",
        )
        .unwrap();
        let r = c.roles["analyst"];
        assert_eq!(r.apply(c.limits).max_limit, 10_000);
        assert_eq!(r.apply(c.limits).max_depth, c.limits.max_depth);
        assert_eq!(r.statement_timeout_ms, Some(50));
        assert!(c.validate().is_ok());
        let bad: GraphqlConfig = toml::from_str("[roles.analyst]\ndefault_limit = 5000").unwrap();
        assert_eq!(
            bad.validate().unwrap_err().key,
            "graphql.roles.analyst.default_limit"
        );
        let e = toml::from_str::<GraphqlConfig>("[roles.analyst]\nmax_limt = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_limt"), "{e}");
        let t = toml::Table::try_from(c.clone()).unwrap();
        let back: GraphqlConfig = t.try_into().unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn defaults_round_trip_through_a_table() {
        let t = toml::Table::try_from(GraphqlConfig::default()).unwrap();
        assert_eq!(t.get("graphiql"), Some(&toml::Value::Boolean(true)));
        assert!(t.contains_key("max_depth") && !t.contains_key("max_body_bytes"));
        assert_eq!(t.get("apq"), Some(&toml::Value::Boolean(true)));
        let back: GraphqlConfig = t.try_into().unwrap();
        assert_eq!(back, GraphqlConfig::default());
    }
}
