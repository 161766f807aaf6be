//! The SQL core of both doors (HTTP GraphQL and Flight): the statement [`Builder`] and its
//! [`Param`]s, identifier quoting, and the one operator table ([`condition`]). For GraphQL,
//! a planned selection becomes one parameterised statement per root field that builds the
//! response JSON inside PostgreSQL ([`select`], [`filter`], [`mutation`]); Flight's planner
//! (`flight::plan`) builds view tickets from the same parts. Identifiers come only from the
//! compiled schema or the catalog and are always quoted; values are always bind parameters.

pub mod condition;
pub mod filter;
pub mod mutation;
pub mod select;

use std::fmt::Write as _;

use tokio_postgres::types::ToSql;

/// An argument value after variables and defaults are applied (object fields keep their
/// order, enum literals stay distinguishable from strings).
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Null,
    Int(i64),
    Float(f64),
    String(String),
    Boolean(bool),
    Enum(String),
    List(Vec<ArgValue>),
    Object(Vec<(String, ArgValue)>),
}

impl ArgValue {
    /// A field of an object value.
    pub fn get(&self, name: &str) -> Option<&ArgValue> {
        match self {
            ArgValue::Object(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
    /// Short description of the kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ArgValue::Null => "null",
            ArgValue::Int(_) => "an integer",
            ArgValue::Float(_) => "a float",
            ArgValue::String(_) => "a string",
            ArgValue::Boolean(_) => "a boolean",
            ArgValue::Enum(_) => "an enum value",
            ArgValue::List(_) => "a list",
            ArgValue::Object(_) => "an object",
        }
    }
}

/// Errors of building a statement from user input. The messages are safe to show to clients.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SqlError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    LimitExceeded(String),
}

impl SqlError {
    /// The `extensions.code` of this error.
    pub fn code(&self) -> crate::error_code::ErrorCode {
        match self {
            SqlError::BadInput(_) => crate::error_code::ErrorCode::BadUserInput,
            SqlError::LimitExceeded(_) => crate::error_code::ErrorCode::LimitExceeded,
        }
    }
}

/// A bind parameter. Every placeholder in generated SQL carries an explicit cast so the
/// prepared statement's parameter types match these Rust types.
#[derive(Debug, Clone)]
pub enum Param {
    /// `$n::text`
    Text(Option<String>),
    /// `$n::text[]`
    TextArray(Vec<Option<String>>),
    /// `$n::bigint`
    BigInt(i64),
    /// `$n::jsonb`
    Json(serde_json::Value),
}

/// `p` as an SQL literal (quoted and cast like its placeholder), for display only: the
/// server always binds parameters.
pub fn param_literal(p: &Param) -> String {
    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }
    match p {
        Param::Text(Some(t)) => quote(t),
        Param::Text(None) => "NULL".into(),
        Param::TextArray(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Some(t) => format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")),
                    None => "NULL".into(),
                })
                .collect();
            quote(&format!("{{{}}}", inner.join(",")))
        }
        Param::BigInt(n) => n.to_string(),
        Param::Json(v) => quote(&v.to_string()),
    }
}

/// The statement with its placeholders replaced by literals (for psql or pgbench).
pub fn inline_params(stmt: &Statement) -> String {
    // One pass over the text, so a literal containing `$2` is never substituted again.
    let mut out = String::with_capacity(stmt.sql.len());
    let mut rest = stmt.sql.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let digits = rest[i + 1..]
            .bytes()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let index: Option<usize> = rest[i + 1..i + 1 + digits].parse().ok();
        match index
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| stmt.params.get(n))
        {
            Some(p) => out.push_str(&param_literal(p)),
            None => out.push_str(&rest[i..i + 1 + digits]),
        }
        rest = &rest[i + 1 + digits..];
    }
    out.push_str(rest);
    out
}

impl Param {
    /// The type its placeholder is cast to, for statements prepared with declared types.
    pub fn sql_type(&self) -> tokio_postgres::types::Type {
        use tokio_postgres::types::Type;
        match self {
            Param::Text(_) => Type::TEXT,
            Param::TextArray(_) => Type::TEXT_ARRAY,
            Param::BigInt(_) => Type::INT8,
            Param::Json(_) => Type::JSONB,
        }
    }

    /// A reference usable by tokio-postgres.
    pub fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Text(v) => v,
            Param::TextArray(v) => v,
            Param::BigInt(v) => v,
            Param::Json(v) => v,
        }
    }
}

/// One statement with its parameters.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
    /// How the statement was built, for `explain` (which path each condition took).
    pub notes: Vec<String>,
}

/// Collects SQL text and parameters.
#[derive(Debug, Default)]
pub struct Builder {
    pub params: Vec<Param>,
    alias: usize,
    /// Filter conditions rendered so far (see `filter::InputLimits::max_conditions`).
    pub conditions: usize,
    /// See [`Statement::notes`].
    pub notes: Vec<String>,
}

impl Builder {
    /// Adds a parameter and returns its placeholder with the matching cast (`$3::text`).
    pub fn param(&mut self, p: Param) -> String {
        let cast = match &p {
            Param::Text(_) => "text",
            Param::TextArray(_) => "text[]",
            Param::BigInt(_) => "bigint",
            Param::Json(_) => "jsonb",
        };
        self.params.push(p);
        format!("${}::{cast}", self.params.len())
    }
    /// A fresh table alias.
    pub fn alias(&mut self, prefix: &str) -> String {
        self.alias += 1;
        format!("{prefix}{}", self.alias)
    }
}

/// Quotes an identifier: `v_user` → `"v_user"`, `app.v_user` → `"app"."v_user"`.
pub fn quote_qualified(name: &str) -> String {
    let mut out = String::new();
    for (i, part) in name.splitn(2, '.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&quote_ident(part));
    }
    out
}

/// Quotes one identifier part.
pub fn quote_ident(part: &str) -> String {
    format!("\"{}\"", part.replace('"', "\"\""))
}

/// A SQL string literal (only for names from the compiled schema, e.g. JSON keys).
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `src->'key'` for a key from the compiled schema.
pub fn json_path(src: &str, key: &str) -> String {
    let mut s = String::with_capacity(src.len() + key.len() + 6);
    let _ = write!(s, "{src}->{}", quote_literal(key));
    s
}
