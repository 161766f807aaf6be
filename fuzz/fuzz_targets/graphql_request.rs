//! The GraphQL request path: body (POST JSON, or a GET query string) → parse → validate →
//! plan → SQL text, via `Engine::explain` over the blog schema (no database).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let engine = common::blog_engine();
    if let Ok(Some(req)) = fraiseql::graphql::http::parse_body(data) {
        let _ = engine.explain(&req);
    }
    if let Ok(qs) = std::str::from_utf8(data) {
        if let Ok(Some(req)) = fraiseql::graphql::http::parse_query_string(qs) {
            let _ = engine.explain(&req);
        }
        // The bytes as a document on their own (most inputs are not a JSON body).
        let req = fraiseql::graphql::execute::Request {
            query: qs.to_owned(),
            operation_name: None,
            variables: None,
        };
        let _ = engine.explain(&req);
    }
});
