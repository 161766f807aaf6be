//! `fraiseql compile`: an SDK's `schema.json` into `schema.compiled.json`, with the
//! compiler's warnings on stderr.

use std::path::Path;

/// Compiles `input` and writes the compiled schema to `output`.
pub fn run(input: &Path, output: &Path) -> anyhow::Result<()> {
    let (compiled, warnings) = crate::schema::compile_file(input)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let json = crate::schema::to_compiled_json(&compiled);
    std::fs::write(output, json)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
    println!(
        "compiled {} into {} ({} types, {} queries, {} mutations)",
        input.display(),
        output.display(),
        compiled.types.len(),
        compiled.queries.len(),
        compiled.mutations.len()
    );
    Ok(())
}
