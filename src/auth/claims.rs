//! Paths into a token's claims (`role`, `app_metadata.role`,
//! `"https://hasura.io/jwt/claims".x-hasura-default-role`), and the values a request takes
//! from them.
//!
//! Segments are separated by dots; a segment in double quotes may contain dots (claim names
//! that are URLs, as Hasura's namespace is). An unquoted path whose first segments do not
//! name a key is also tried as one key up to each dot, longest first, so
//! `https://hasura.io/jwt/claims.x-hasura-default-role` works without quotes.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    /// Quoted segments stay whole; unquoted text is kept with its dots for the
    /// longest-key lookup.
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Quoted(String),
    Dotted(String),
}

impl ClaimPath {
    pub fn parse(path: &str) -> Result<ClaimPath, String> {
        if path.is_empty() {
            return Err("empty".into());
        }
        if path.len() > 512 {
            return Err("longer than 512 bytes".into());
        }
        let mut segments = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(q) = rest.strip_prefix('"') {
                let end = q.find('"').ok_or("an unterminated quote")?;
                if end == 0 {
                    return Err("an empty quoted segment".into());
                }
                segments.push(Segment::Quoted(q[..end].to_string()));
                rest = &q[end + 1..];
                if let Some(r) = rest.strip_prefix('.') {
                    if r.is_empty() {
                        return Err("a trailing dot".into());
                    }
                    rest = r;
                } else if !rest.is_empty() {
                    return Err("a quoted segment must be followed by a dot or the end".into());
                }
            } else {
                let end = rest.find('"').unwrap_or(rest.len());
                let text = &rest[..end];
                // Before a quoted segment the dot separates; at the end it is a trailing dot.
                let trimmed = if end < rest.len() {
                    text.strip_suffix('.').unwrap_or(text)
                } else {
                    text
                };
                if end < rest.len() && trimmed.len() == text.len() {
                    return Err("a quote must start a segment".into());
                }
                if trimmed.is_empty() || trimmed.split('.').any(str::is_empty) {
                    return Err("an empty segment".into());
                }
                segments.push(Segment::Dotted(trimmed.to_string()));
                rest = &rest[end..];
            }
        }
        Ok(ClaimPath { segments })
    }

    /// The value at this path, if any.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        lookup_segments(claims, &self.segments)
    }
}

fn lookup_segments<'a>(obj: &'a Map<String, Value>, segments: &[Segment]) -> Option<&'a Value> {
    let (first, rest) = segments.split_first()?;
    match first {
        Segment::Quoted(key) => descend(obj.get(key)?, rest),
        Segment::Dotted(text) => lookup_dotted(obj, text, rest),
    }
}

fn descend<'a>(value: &'a Value, rest: &[Segment]) -> Option<&'a Value> {
    if rest.is_empty() {
        return Some(value);
    }
    lookup_segments(value.as_object()?, rest)
}

/// `text` is one or more dotted parts: the longest prefix that is a key wins.
fn lookup_dotted<'a>(
    obj: &'a Map<String, Value>,
    text: &str,
    rest: &[Segment],
) -> Option<&'a Value> {
    if let Some(found) = obj.get(text).and_then(|v| descend(v, rest)) {
        return Some(found);
    }
    let mut cut = text.len();
    while let Some(dot) = text[..cut].rfind('.') {
        cut = dot;
        if let Some(v) = obj.get(&text[..dot]) {
            let inner = v.as_object()?;
            if let Some(found) = lookup_dotted(inner, &text[dot + 1..], rest) {
                return Some(found);
            }
        }
    }
    None
}

/// A claim as a setting's value: strings as they are, other scalars as JSON text, objects
/// and arrays as JSON.
pub fn as_setting(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Scopes from a space-separated string or an array of strings.
pub fn scopes(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(path: &str, claims: Value) -> Option<Value> {
        ClaimPath::parse(path)
            .unwrap()
            .lookup(claims.as_object().unwrap())
            .cloned()
    }

    #[test]
    fn paths_reach_nested_and_url_named_claims() {
        let c = json!({
            "role": "editor",
            "app_metadata": {"role": "admin"},
            "https://hasura.io/jwt/claims": {"x-hasura-default-role": "user"}
        });
        assert_eq!(get("role", c.clone()), Some(json!("editor")));
        assert_eq!(get("app_metadata.role", c.clone()), Some(json!("admin")));
        assert_eq!(
            get(
                "\"https://hasura.io/jwt/claims\".x-hasura-default-role",
                c.clone()
            ),
            Some(json!("user"))
        );
        assert_eq!(
            get(
                "https://hasura.io/jwt/claims.x-hasura-default-role",
                c.clone()
            ),
            Some(json!("user"))
        );
        assert_eq!(get("app_metadata.nope", c.clone()), None);
        assert_eq!(get("role.deeper", c), None);
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in ["", ".", "a..b", "a.", "\"a", "\"\"", "a\"b\"", "\"a\"b"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scope_claims_in_both_shapes() {
        assert_eq!(scopes(&json!("read:a  write:b")), ["read:a", "write:b"]);
        assert_eq!(scopes(&json!(["read:a", 3, "x"])), ["read:a", "x"]);
        assert!(scopes(&json!(7)).is_empty());
    }
}
