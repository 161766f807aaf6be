//! The observer condition language: parse any text; a condition that parses is evaluated
//! against a change with before/after images.
#![no_main]

use std::sync::OnceLock;

use fraiseql::observers::condition::{ChangeView, Condition};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn images() -> &'static (Value, Value, Vec<String>) {
    static IMAGES: OnceLock<(Value, Value, Vec<String>)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        (
            json!({"status": "draft", "total": 10, "tags": ["a", "b"], "owner": {"id": 1, "name": "x"}, "n": null}),
            json!({"status": "paid", "total": 12.5, "tags": ["a"], "owner": {"id": 2, "name": "y"}, "flag": true}),
            vec!["status".into(), "total".into()],
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Condition::parse(src) {
        let (before, after, changed) = images();
        for (b, a) in [
            (Some(before), Some(after)),
            (None, Some(after)),
            (Some(before), None),
        ] {
            let _ = c.eval(&ChangeView {
                before: b,
                after: a,
                changed_fields: Some(changed),
            });
        }
        let _ = c.eval(&ChangeView {
            before: None,
            after: None,
            changed_fields: None,
        });
    }
});
