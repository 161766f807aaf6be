//! The one shape of a configuration error, shared by every section: the dotted key that is
//! wrong and what it expects. Each module owns its section's struct and returns [`Invalid`]
//! from its `validate`; `config` adds where the value came from (file, environment, flag)
//! and turns it into the message a user sees: `<key> (from <origin>): <expected>`.

/// A configuration value that does not meet its section's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {expected}")]
pub struct Invalid {
    /// The dotted key (`graphql.max_limit`).
    pub key: String,
    /// What the key expects, phrased for the user (`must be at least 1`).
    pub expected: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, expected: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            expected: expected.into(),
        }
    }
}

/// Checks that each `(key, value)` is at least 1.
pub fn at_least_one(pairs: &[(&str, usize)]) -> Result<(), Invalid> {
    match pairs.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(Invalid::new(*key, "must be at least 1")),
        None => Ok(()),
    }
}
