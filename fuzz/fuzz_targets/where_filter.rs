//! The `where` compiler (and `orderBy`, `limit`, `offset`): the input is a JSON value sent
//! as a variable to one of the blog's list fields; `Engine::explain` coerces it and
//! compiles it to SQL (`sql::filter`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

mod common;

const QUERIES: [&str; 6] = [
    "query($v: UserWhereInput) { users(where: $v) { id name posts { title } } }",
    "query($v: PostWhereInput) { posts(where: $v, limit: 5) { id title tags author { name } } }",
    "query($v: CommentWhereInput) { comments(where: $v) { id body } }",
    "query($v: [UserOrderBy!]) { users(orderBy: $v) { id } }",
    "query($v: Int) { posts(limit: $v, offset: $v) { id } }",
    "query($v: [PostOrderBy!]) { posts(orderBy: $v, limit: 3) { id comments { body } } }",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let req = fraiseql::graphql::execute::Request {
        query: QUERIES[pick as usize % QUERIES.len()].to_owned(),
        operation_name: None,
        variables: Some(json!({ "v": value })),
    };
    let _ = common::blog_engine().explain(&req);
});
