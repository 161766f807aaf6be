//! Persisted documents: which GraphQL documents a request may run, and by which hash.
//!
//! - **Trusted documents** (`graphql.trusted_documents`): an allow-list manifest, either
//!   Apollo's persisted query manifest (`{"format": "apollo-persisted-query-manifest",
//!   "version": 1, "operations": [{"id", "body", …}]}`) or the GraphQL Trusted Documents /
//!   Relay map (`{"<sha256>": "<document>"}`). Every id must be the SHA-256 of its body, or the
//!   manifest is refused. Only its documents run, by hash (`extensions.persistedQuery`) or by
//!   their exact text; anything else is refused with `PERSISTED_QUERY_NOT_FOUND` before
//!   anything executes, unless the identity's role is one of
//!   `graphql.trusted_documents_bypass_roles`. Reloaded on SIGHUP ([`Documents::reload`]).
//! - **APQ** (Apollo automatic persisted queries, `graphql.apq`, only when the allow-list is
//!   off): a hash alone runs the document registered with it before; an unknown hash answers
//!   `PERSISTED_QUERY_NOT_FOUND` (HTTP 200, as Apollo), and the client sends the document with
//!   its hash, which is checked and kept in a cache bounded by `graphql.apq_cache_bytes`
//!   (least recently used first out).

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha2::Digest as _;

use super::config::DocumentsConfig;
use crate::auth::Identity;
use crate::error_code::ErrorCode;

/// The message Apollo clients match on to send the document with its hash.
const NOT_FOUND: &str = "PersistedQueryNotFound";
/// The message Apollo clients match on to stop sending hashes.
const NOT_SUPPORTED: &str = "PersistedQueryNotSupported";
/// The answer to a document the allow-list does not hold.
const NOT_TRUSTED: &str = "only trusted documents run on this server, and this document is not one of them \
     (PersistedQueryNotFound)";

/// Errors loading a trusted-documents manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("trusted documents {}: cannot be read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "trusted documents {}: larger than graphql.trusted_documents_max_bytes ({max} bytes)",
        path.display()
    )]
    TooLarge { path: PathBuf, max: usize },
    #[error("trusted documents {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The lowercase hexadecimal SHA-256 of `document`.
pub fn sha256_hex(document: &str) -> String {
    hex::encode(sha2::Sha256::digest(document.as_bytes()))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The documents of a manifest, by the lowercase hex SHA-256 of their text.
#[derive(Debug, Default)]
pub struct Manifest {
    documents: HashMap<String, Arc<str>>,
}

impl Manifest {
    /// Reads `path` (at most `max_bytes`) and parses it with [`Manifest::parse`].
    pub fn load(path: &Path, max_bytes: usize) -> Result<Manifest, ManifestError> {
        let read = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut bytes = Vec::new();
        file.take(max_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() > max_bytes {
            return Err(ManifestError::TooLarge {
                path: path.to_path_buf(),
                max: max_bytes,
            });
        }
        let invalid = |message| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            invalid(format!(
                "not valid UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Manifest::parse(&text).map_err(invalid)
    }

    /// Parses an Apollo persisted query manifest or a `{"<sha256>": "<document>"}` map; every
    /// id must be the SHA-256 of its document (the error names the first that is not).
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        let serde_json::Value::Object(mut map) = value else {
            return Err("expected a JSON object".into());
        };
        let mut manifest = Manifest::default();
        let Some(format) = map.remove("format") else {
            for (id, body) in map {
                let serde_json::Value::String(body) = body else {
                    return Err(format!("{id:?}: expected the document, a string"));
                };
                manifest.add(&id, body)?;
            }
            return Ok(manifest);
        };
        if format != "apollo-persisted-query-manifest" {
            return Err(format!(
                "unknown format {format}; expected \"apollo-persisted-query-manifest\", or an \
                 object of SHA-256 → document"
            ));
        }
        match map.get("version") {
            Some(v) if v == 1 => {}
            v => {
                return Err(format!(
                    "apollo-persisted-query-manifest version {}; only version 1 is read",
                    v.map_or("missing".into(), ToString::to_string)
                ));
            }
        }
        let Some(serde_json::Value::Array(operations)) = map.remove("operations") else {
            return Err("`operations` must be an array".into());
        };
        for (i, op) in operations.into_iter().enumerate() {
            let (Some(serde_json::Value::String(id)), Some(serde_json::Value::String(body))) =
                (op.get("id"), op.get("body"))
            else {
                return Err(format!(
                    "operations[{i}]: expected an object with the strings `id` and `body`"
                ));
            };
            manifest.add(id, body.clone())?;
        }
        Ok(manifest)
    }

    fn add(&mut self, id: &str, body: String) -> Result<(), String> {
        if !is_sha256_hex(id) {
            return Err(format!(
                "document {id:?}: the id is not a SHA-256 (64 hexadecimal digits)"
            ));
        }
        let actual = sha256_hex(&body);
        if !id.eq_ignore_ascii_case(&actual) {
            return Err(format!(
                "document {id}: the id is not the SHA-256 of its body (that is {actual})"
            ));
        }
        self.documents.insert(actual, Arc::from(body));
        Ok(())
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The document whose hash (lowercase hex) is `hash`.
    pub fn get(&self, hash: &str) -> Option<&Arc<str>> {
        self.documents.get(hash)
    }
}

/// `extensions.persistedQuery` of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedQuery {
    /// The SHA-256 of the document, lowercase hex.
    pub sha256_hash: String,
}

impl PersistedQuery {
    /// Reads `extensions` (a JSON object); `None` when it has no `persistedQuery`. Errors are
    /// messages for a 400.
    pub fn from_extensions(
        extensions: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<PersistedQuery>, String> {
        let pq = match extensions.get("persistedQuery") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::Object(pq)) => pq,
            Some(_) => return Err("`extensions.persistedQuery` must be an object".into()),
        };
        if pq.get("version").and_then(serde_json::Value::as_i64) != Some(1) {
            return Err("unsupported persisted query version: expected `version: 1`".into());
        }
        match pq.get("sha256Hash").and_then(serde_json::Value::as_str) {
            Some(h) if is_sha256_hex(h) => Ok(Some(PersistedQuery {
                sha256_hash: h.to_ascii_lowercase(),
            })),
            _ => Err(
                "`extensions.persistedQuery.sha256Hash` must be a SHA-256 (64 hexadecimal digits)"
                    .into(),
            ),
        }
    }
}

/// The document a request runs, and what happened to its hash (a metrics label).
#[derive(Debug)]
pub struct Resolved {
    pub query: String,
    pub outcome: Option<&'static str>,
}

/// Why nothing runs.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: &'static str,
    /// The metrics label.
    pub outcome: &'static str,
}

impl Refusal {
    fn new(code: ErrorCode, message: &'static str, outcome: &'static str) -> Refusal {
        Refusal {
            code,
            message,
            outcome,
        }
    }
}

/// Every label of `fraiseql_graphql_persisted_queries_total{outcome}`.
pub const OUTCOMES: &[&str] = &[
    "hit",
    "registered",
    "bypass",
    "not_found",
    "refused",
    "mismatch",
    "not_supported",
];

/// The APQ cache: hash → document, bounded in bytes, least recently used evicted first.
#[derive(Debug)]
struct ApqCache {
    max_bytes: usize,
    used: usize,
    clock: u64,
    entries: HashMap<String, (Arc<str>, u64)>,
    /// Last use → hash, oldest first.
    order: BTreeMap<u64, String>,
}

impl ApqCache {
    fn new(max_bytes: usize) -> ApqCache {
        ApqCache {
            max_bytes,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// What an entry counts against the bound: the texts and a fixed overhead.
    fn cost(hash: &str, doc: &str) -> usize {
        hash.len() + doc.len() + 64
    }

    fn get(&mut self, hash: &str) -> Option<Arc<str>> {
        self.clock += 1;
        let (doc, used) = self.entries.get_mut(hash)?;
        self.order.remove(used);
        *used = self.clock;
        self.order.insert(self.clock, hash.to_owned());
        Some(Arc::clone(doc))
    }

    fn insert(&mut self, hash: &str, doc: &str) {
        if self.get(hash).is_some() {
            return;
        }
        let cost = ApqCache::cost(hash, doc);
        if cost > self.max_bytes {
            return;
        }
        while self.used + cost > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.entries.remove(&oldest) {
                self.used -= ApqCache::cost(&oldest, &d);
            }
        }
        self.used += cost;
        self.entries
            .insert(hash.to_owned(), (Arc::from(doc), self.clock));
        self.order.insert(self.clock, hash.to_owned());
    }
}

/// The persisted-document state of a server: the manifest (swapped whole on reload) or the
/// APQ cache. Shared by every engine a schema reload builds.
#[derive(Debug)]
pub struct Documents {
    path: Option<PathBuf>,
    max_bytes: usize,
    bypass_roles: Vec<String>,
    manifest: RwLock<Option<Arc<Manifest>>>,
    apq: Option<Mutex<ApqCache>>,
    /// Documents larger than this are not cached (the engine refuses them anyway).
    max_query_bytes: usize,
}

impl Documents {
    /// Loads the manifest of `config`, if any; `None` when neither the allow-list nor APQ is
    /// on.
    pub fn load(
        config: &DocumentsConfig,
        max_query_bytes: usize,
    ) -> Result<Option<Documents>, ManifestError> {
        let path = config
            .allow_list()
            .then(|| PathBuf::from(&config.trusted_documents));
        let manifest = match &path {
            Some(p) => Some(Arc::new(Manifest::load(
                p,
                config.trusted_documents_max_bytes,
            )?)),
            None if !config.apq => return Ok(None),
            None => None,
        };
        Ok(Some(Documents {
            apq: manifest
                .is_none()
                .then(|| Mutex::new(ApqCache::new(config.apq_cache_bytes))),
            path,
            max_bytes: config.trusted_documents_max_bytes,
            bypass_roles: config.trusted_documents_bypass_roles.clone(),
            manifest: RwLock::new(manifest),
            max_query_bytes,
        }))
    }

    /// Reads the manifest again and swaps it in: the number of documents, `None` when the
    /// allow-list is off. On error the current manifest stays.
    pub fn reload(&self) -> Result<Option<usize>, ManifestError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let loaded = Arc::new(Manifest::load(path, self.max_bytes)?);
        let n = loaded.len();
        *self.manifest.write().unwrap_or_else(|p| p.into_inner()) = Some(loaded);
        Ok(Some(n))
    }

    /// The manifest file, when the allow-list is on.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The manifest serving now (`None`: the allow-list is off).
    pub fn manifest(&self) -> Option<Arc<Manifest>> {
        self.manifest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn bypasses(&self, identity: &Identity) -> bool {
        !identity.is_unrestricted() && self.bypass_roles.iter().any(|r| r == identity.role())
    }

    /// Whether `document`, sent as text, may run for `identity` (Flight tickets).
    pub fn admits(&self, document: &str, identity: &Identity) -> bool {
        self.manifest()
            .is_none_or(|m| m.get(&sha256_hex(document)).is_some() || self.bypasses(identity))
    }
}

/// The document a request runs: its `query`, or the one its `extensions.persistedQuery` hash
/// names; at least one of them is given. `documents` is `None` when persisted queries are
/// off (no allow-list, no APQ).
pub fn resolve(
    documents: Option<&Documents>,
    query: Option<String>,
    persisted: Option<&PersistedQuery>,
    identity: &Identity,
) -> Result<Resolved, Refusal> {
    let run = |query: String, outcome| Ok(Resolved { query, outcome });
    let manifest = documents.and_then(Documents::manifest);
    let Some(pq) = persisted else {
        let query = query.unwrap_or_default();
        return match (&manifest, documents) {
            (Some(m), Some(d)) => {
                if m.get(&sha256_hex(&query)).is_some() {
                    run(query, Some("hit"))
                } else if d.bypasses(identity) {
                    run(query, Some("bypass"))
                } else {
                    Err(Refusal::new(
                        ErrorCode::PersistedQueryNotFound,
                        NOT_TRUSTED,
                        "refused",
                    ))
                }
            }
            _ => run(query, None),
        };
    };
    let Some(d) = documents else {
        return Err(Refusal::new(
            ErrorCode::PersistedQueryNotSupported,
            NOT_SUPPORTED,
            "not_supported",
        ));
    };
    // An empty `query` next to a hash is no document (as Apollo Server reads it).
    let query = query.filter(|q| !q.is_empty());
    if query
        .as_deref()
        .is_some_and(|q| sha256_hex(q) != pq.sha256_hash)
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "provided sha does not match query",
            "mismatch",
        ));
    }
    if let Some(m) = manifest {
        return match (m.get(&pq.sha256_hash), query) {
            (Some(doc), _) => run(doc.to_string(), Some("hit")),
            (None, Some(q)) if d.bypasses(identity) => run(q, Some("bypass")),
            (None, Some(_)) => Err(Refusal::new(
                ErrorCode::PersistedQueryNotFound,
                NOT_TRUSTED,
                "refused",
            )),
            (None, None) => Err(Refusal::new(
                ErrorCode::PersistedQueryNotFound,
                NOT_FOUND,
                "not_found",
            )),
        };
    }
    let Some(apq) = &d.apq else {
        return Err(Refusal::new(
            ErrorCode::PersistedQueryNotSupported,
            NOT_SUPPORTED,
            "not_supported",
        ));
    };
    let mut cache = apq.lock().unwrap_or_else(|p| p.into_inner());
    match query {
        Some(q) => {
            let hit = cache.get(&pq.sha256_hash).is_some();
            if !hit && q.len() <= d.max_query_bytes {
                cache.insert(&pq.sha256_hash, &q);
            }
            run(q, Some(if hit { "hit" } else { "registered" }))
        }
        None => match cache.get(&pq.sha256_hash) {
            Some(doc) => run(doc.to_string(), Some("hit")),
            None => Err(Refusal::new(
                ErrorCode::PersistedQueryNotFound,
                NOT_FOUND,
                "not_found",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "{ posts { id } }";

    fn pq(doc: &str) -> PersistedQuery {
        PersistedQuery {
            sha256_hash: sha256_hex(doc),
        }
    }

    #[test]
    fn reads_both_manifest_formats() {
        let h = sha256_hex(Q);
        let apollo = format!(
            r#"{{"format":"apollo-persisted-query-manifest","version":1,"operations":[{{"id":"{h}","body":{Q:?},"name":"Posts","type":"query"}}]}}"#
        );
        let m = Manifest::parse(&apollo).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&h).map(|d| &**d), Some(Q));
        let map = format!(r#"{{"{}": {Q:?}}}"#, h.to_ascii_uppercase());
        let m = Manifest::parse(&map).unwrap();
        assert_eq!(m.get(&h).map(|d| &**d), Some(Q));
        assert!(Manifest::parse("{}").unwrap().is_empty());
    }

    #[test]
    fn refuses_a_manifest_whose_id_is_not_the_hash_of_its_body() {
        let wrong = sha256_hex("{ other }");
        let e = Manifest::parse(&format!(r#"{{"{wrong}": {Q:?}}}"#)).unwrap_err();
        assert!(
            e.contains(&wrong) && e.contains(&sha256_hex(Q)) && e.contains("not the SHA-256"),
            "{e}"
        );
        let e = Manifest::parse(&format!(
            r#"{{"format":"apollo-persisted-query-manifest","version":1,"operations":[{{"id":"{wrong}","body":{Q:?}}}]}}"#
        ))
        .unwrap_err();
        assert!(e.contains(&wrong), "{e}");
        let e = Manifest::parse(r#"{"abc": "{ a }"}"#).unwrap_err();
        assert!(e.contains("\"abc\"") && e.contains("64 hexadecimal"), "{e}");
        for (text, expect) in [
            ("[]", "JSON object"),
            ("{", "not valid JSON"),
            (r#"{"format":"relay"}"#, "unknown format"),
            (
                r#"{"format":"apollo-persisted-query-manifest","version":2,"operations":[]}"#,
                "version 2",
            ),
            (
                r#"{"format":"apollo-persisted-query-manifest","version":1}"#,
                "`operations`",
            ),
            (
                r#"{"format":"apollo-persisted-query-manifest","version":1,"operations":[{"id":1}]}"#,
                "operations[0]",
            ),
            (
                &format!(r#"{{"{}": 1}}"#, sha256_hex(Q)),
                "expected the document",
            ),
        ] {
            let e = Manifest::parse(text).unwrap_err();
            assert!(e.contains(expect), "{text}: {e}");
        }
    }

    #[test]
    fn the_file_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, format!(r#"{{"{}": {Q:?}}}"#, sha256_hex(Q))).unwrap();
        assert_eq!(Manifest::load(&path, 1000).unwrap().len(), 1);
        let e = Manifest::load(&path, 10).unwrap_err().to_string();
        assert!(e.contains("trusted_documents_max_bytes"), "{e}");
        let e = Manifest::load(&dir.path().join("none.json"), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn reads_the_extension() {
        let ext = |v: serde_json::Value| {
            PersistedQuery::from_extensions(v.as_object().unwrap())
                .map(|p| p.map(|p| p.sha256_hash))
        };
        let h = sha256_hex(Q);
        assert_eq!(ext(serde_json::json!({})), Ok(None));
        assert_eq!(
            ext(
                serde_json::json!({"persistedQuery": {"version": 1, "sha256Hash": h.to_ascii_uppercase()}})
            ),
            Ok(Some(h.clone()))
        );
        assert!(
            ext(serde_json::json!({"persistedQuery": {"version": 2, "sha256Hash": h}})).is_err()
        );
        assert!(
            ext(serde_json::json!({"persistedQuery": {"version": 1, "sha256Hash": "x"}})).is_err()
        );
        assert!(ext(serde_json::json!({"persistedQuery": 1})).is_err());
    }

    fn apq(max: usize) -> Documents {
        Documents {
            path: None,
            max_bytes: 0,
            bypass_roles: vec![],
            manifest: RwLock::new(None),
            apq: Some(Mutex::new(ApqCache::new(max))),
            max_query_bytes: 1000,
        }
    }

    #[test]
    fn apq_registers_then_runs_the_hash_alone() {
        let d = apq(1 << 20);
        let id = Identity::unrestricted();
        let e = resolve(Some(&d), None, Some(&pq(Q)), &id).unwrap_err();
        assert_eq!(
            (e.code, e.message),
            (ErrorCode::PersistedQueryNotFound, NOT_FOUND)
        );
        let r = resolve(Some(&d), Some(Q.into()), Some(&pq(Q)), &id).unwrap();
        assert_eq!((r.query.as_str(), r.outcome), (Q, Some("registered")));
        let r = resolve(Some(&d), None, Some(&pq(Q)), &id).unwrap();
        assert_eq!((r.query.as_str(), r.outcome), (Q, Some("hit")));
        let r = resolve(Some(&d), Some(String::new()), Some(&pq(Q)), &id).unwrap();
        assert_eq!(r.query, Q);
        let e = resolve(Some(&d), Some("{ x }".into()), Some(&pq(Q)), &id).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = resolve(None, None, Some(&pq(Q)), &id).unwrap_err();
        assert_eq!(e.code, ErrorCode::PersistedQueryNotSupported);
        let r = resolve(None, Some(Q.into()), None, &id).unwrap();
        assert_eq!((r.query.as_str(), r.outcome), (Q, None));
    }

    #[test]
    fn the_apq_cache_drops_the_least_recently_used() {
        let docs: Vec<String> = (0..4).map(|i| format!("{{ f{i} }}")).collect();
        let one = ApqCache::cost(&sha256_hex(&docs[0]), &docs[0]);
        let mut c = ApqCache::new(one * 3);
        for d in &docs[..3] {
            c.insert(&sha256_hex(d), d);
        }
        assert!(c.get(&sha256_hex(&docs[0])).is_some());
        c.insert(&sha256_hex(&docs[3]), &docs[3]);
        assert!(
            c.get(&sha256_hex(&docs[1])).is_none(),
            "least recently used"
        );
        for d in [&docs[0], &docs[2], &docs[3]] {
            assert!(c.get(&sha256_hex(d)).is_some());
        }
        assert!(c.used <= c.max_bytes && c.entries.len() == 3 && c.order.len() == 3);
        let mut tiny = ApqCache::new(10);
        tiny.insert(&sha256_hex(Q), Q);
        assert!(tiny.entries.is_empty());
    }

    #[test]
    fn the_allow_list_runs_only_its_documents() {
        let mut m = Manifest::default();
        m.add(&sha256_hex(Q), Q.into()).unwrap();
        let d = Documents {
            path: None,
            max_bytes: 0,
            bypass_roles: vec!["developer".into()],
            manifest: RwLock::new(Some(Arc::new(m))),
            apq: None,
            max_query_bytes: 1000,
        };
        let anyone = Identity::unrestricted();
        let dev = Identity::principal("me", "developer", &[]).unwrap();
        let r = resolve(Some(&d), None, Some(&pq(Q)), &anyone).unwrap();
        assert_eq!(r.query, Q);
        let r = resolve(Some(&d), Some(Q.into()), None, &anyone).unwrap();
        assert_eq!(r.query, Q);
        let other = "{ users { id } }";
        let e = resolve(Some(&d), None, Some(&pq(other)), &anyone).unwrap_err();
        assert_eq!(
            (e.code, e.message),
            (ErrorCode::PersistedQueryNotFound, NOT_FOUND)
        );
        for p in [None, Some(pq(other))] {
            let e = resolve(Some(&d), Some(other.into()), p.as_ref(), &anyone).unwrap_err();
            assert_eq!(e.code, ErrorCode::PersistedQueryNotFound);
            assert_eq!(e.outcome, "refused");
            let r = resolve(Some(&d), Some(other.into()), p.as_ref(), &dev).unwrap();
            assert_eq!((r.query.as_str(), r.outcome), (other, Some("bypass")));
        }
        assert!(d.admits(Q, &anyone) && !d.admits(other, &anyone) && d.admits(other, &dev));
        // Nothing is registered in allow-list mode.
        assert!(resolve(Some(&d), None, Some(&pq(other)), &dev).is_err());
    }
}
