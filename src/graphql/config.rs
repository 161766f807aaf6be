//! `[graphql]`: which schema the endpoint serves, GraphiQL, and the request limits. The
//! limits are the engine's own [`Limits`], read from the same table: one list of fields, one
//! set of defaults.

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
    /// Every other key of the section (`max_depth`, `max_limit`, `introspection`, …).
    pub limits: Limits,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        GraphqlConfig {
            schema: String::new(),
            graphiql: true,
            limits: Limits::default(),
        }
    }
}

/// The keys of the section that are not limits.
#[derive(Serialize, Deserialize)]
#[serde(default)]
struct Own {
    schema: String,
    graphiql: bool,
}

impl Default for Own {
    fn default() -> Self {
        let d = GraphqlConfig::default();
        Own {
            schema: d.schema,
            graphiql: d.graphiql,
        }
    }
}

impl<'de> Deserialize<'de> for GraphqlConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The section's own keys come off the table first; the rest must be limits (an
        // unknown key is refused there, naming the limits expected).
        let mut table = toml::Table::deserialize(d)?;
        let mut own = toml::Table::new();
        for key in ["schema", "graphiql"] {
            if let Some(v) = table.remove(key) {
                own.insert(key.to_owned(), v);
            }
        }
        let own: Own = own.try_into().map_err(serde::de::Error::custom)?;
        let limits: Limits = table.try_into().map_err(|e: toml::de::Error| {
            serde::de::Error::custom(
                e.message()
                    .replace("expected one of", "expected schema, graphiql or one of"),
            )
        })?;
        Ok(GraphqlConfig {
            schema: own.schema,
            graphiql: own.graphiql,
            limits,
        })
    }
}

impl Serialize for GraphqlConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut table = toml::Table::try_from(Own {
            schema: self.schema.clone(),
            graphiql: self.graphiql,
        })
        .map_err(serde::ser::Error::custom)?;
        let limits = toml::Table::try_from(self.limits).map_err(serde::ser::Error::custom)?;
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
        let l = &self.limits;
        if l.default_limit < 1 || l.default_limit > l.max_limit {
            return Err(Invalid::new(
                "graphql.default_limit",
                format!("must be between 1 and graphql.max_limit ({})", l.max_limit),
            ));
        }
        at_least_one(&[
            ("graphql.max_depth", l.max_depth),
            ("graphql.max_tokens", l.max_tokens),
            ("graphql.max_fields", l.max_fields),
            ("graphql.max_query_bytes", l.max_query_bytes),
            ("graphql.max_root_fields", l.max_root_fields),
        ])
    }
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
    fn defaults_round_trip_through_a_table() {
        let t = toml::Table::try_from(GraphqlConfig::default()).unwrap();
        assert_eq!(t.get("graphiql"), Some(&toml::Value::Boolean(true)));
        assert!(t.contains_key("max_depth") && !t.contains_key("max_body_bytes"));
        let back: GraphqlConfig = t.try_into().unwrap();
        assert_eq!(back, GraphqlConfig::default());
    }
}
