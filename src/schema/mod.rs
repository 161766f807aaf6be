//! The schema: the authoring model users' SDKs export (`schema.json`), the compiler that
//! turns it into the runtime model, the versioned compiled model
//! (`schema.compiled.json`) and the loader that accepts either file.

pub mod authoring;
pub mod compiled;
pub mod compiler;

use std::fmt;
use std::path::Path;

pub use compiled::*;
pub use compiler::{compile_str, to_snake_case};

/// A problem that does not stop compilation (an unknown key from a newer SDK …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file the warning is about.
    pub file: String,
    /// Where in the file: `types[User].fields[email]`.
    pub context: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.context, self.message)
    }
}

/// Errors of reading, compiling or loading a schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{file}: cannot read the file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {context}: {message}")]
    Invalid {
        file: String,
        context: String,
        message: String,
    },
    #[error(
        "{file}: compiled schema version {found} is not supported (this fraiseql reads version {expected}); recompile it with `fraiseql compile`"
    )]
    Version {
        file: String,
        found: u64,
        expected: u32,
    },
    #[error("schema cannot be served: {0}")]
    Runtime(String),
}

fn read(path: &Path) -> Result<String, SchemaError> {
    std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// Compiles an authoring `schema.json`; returns the compiled schema and the warnings.
pub fn compile_file(path: &Path) -> Result<(CompiledSchema, Vec<Warning>), SchemaError> {
    let text = read(path)?;
    compile_str(&text, &path.display().to_string())
}

/// Loads either an authoring `schema.json` (compiled in memory, warnings logged) or a
/// `schema.compiled.json`.
pub fn load(path: &Path) -> Result<CompiledSchema, SchemaError> {
    let text = read(path)?;
    let file = path.display().to_string();
    load_str(&text, &file)
}

/// [`load`] over text already read; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<CompiledSchema, SchemaError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| json_error(file, &e))?;
    let is_compiled = value
        .as_object()
        .is_some_and(|o| o.contains_key("version") && o.contains_key("where_inputs"));
    if !is_compiled {
        let (schema, warnings) = compile_str(text, file)?;
        for w in &warnings {
            tracing::warn!(target: "fraiseql::schema", "{w}");
        }
        return Ok(schema);
    }
    let found = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if found != u64::from(COMPILED_SCHEMA_VERSION)
        && found != u64::from(COMPILED_SCHEMA_VERSION_NO_RULES)
    {
        return Err(SchemaError::Version {
            file: file.to_owned(),
            found,
            expected: COMPILED_SCHEMA_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|e| SchemaError::Invalid {
        file: file.to_owned(),
        context: "compiled schema".into(),
        message: e.to_string(),
    })
}

/// Serializes a compiled schema as pretty JSON (what `fraiseql compile` writes).
pub fn to_compiled_json(schema: &CompiledSchema) -> String {
    serde_json::to_string_pretty(schema).expect("compiled schema serializes")
}

pub(crate) fn json_error(file: &str, e: &serde_json::Error) -> SchemaError {
    SchemaError::Json {
        file: file.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}
