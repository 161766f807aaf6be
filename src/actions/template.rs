//! Templates for action bodies, subjects and messages (minijinja).
//!
//! Every template is compiled when the observer runtime starts, so a syntax error is a
//! config error naming the observer, the action and the key — never a failed delivery.
//! The render context is the job's event document: `event.*`, `before.*`, `after.*`, plus
//! `idempotency_key`. Undefined values are chainable (`{{ after.title }}` on a DELETE renders
//! empty instead of failing) and nothing is HTML-escaped: bodies are JSON or plain text.
//! Use `{{ after | tojson }}` to embed a value as JSON.

use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

/// One compiled template. Each owns a tiny environment so actions can hold templates
/// independently (cheap: the environment only holds this template and the builtins).
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    name: String,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .finish()
    }
}

impl Template {
    /// Compiles `source`; `name` appears in error messages (e.g. `notify/0/body`).
    pub fn compile(name: &str, source: &str) -> Result<Template, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.add_template_owned(name.to_owned(), source.to_owned())
            .map_err(|e| TemplateError(describe(&e)))?;
        Ok(Template {
            env: Arc::new(env),
            name: name.to_owned(),
        })
    }

    pub fn render(&self, ctx: &serde_json::Value) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template(&self.name)
            .map_err(|e| TemplateError(describe(&e)))?;
        tmpl.render(ctx).map_err(|e| TemplateError(describe(&e)))
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{} (line {line})", e.detail().unwrap_or(&e.to_string())),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_event_before_after() {
        let t = Template::compile(
            "t",
            "{{ event.op }} {{ after.title }} {{ before.title }}|{{ after | tojson }}",
        )
        .unwrap();
        let out = t
            .render(&json!({"event": {"op": "UPDATE"}, "before": null, "after": {"title": "Hi"}}))
            .unwrap();
        assert_eq!(out, r#"UPDATE Hi |{"title":"Hi"}"#);
    }

    #[test]
    fn syntax_errors_at_compile_time() {
        let e = Template::compile("x/0/body", "hello {{ after.title").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn no_html_escaping() {
        let t = Template::compile("t", "{{ after.t }}").unwrap();
        assert_eq!(
            t.render(&json!({"after": {"t": "<a & b>"}})).unwrap(),
            "<a & b>"
        );
    }
}
