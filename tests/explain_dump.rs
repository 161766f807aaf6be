//! Prints the SQL the engine generates for the benchmark queries (for pgbench).
mod common;
use common::*;
use fraiseql::graphql::Request;

#[test]
#[ignore = "prints SQL"]
fn dump() {
    let engine = blog_engine();
    for q in [
        "{ users(limit: 20) { id name email posts { id title comments { body } } } }",
        "{ user(id: \"00000000-0000-4000-8000-000000000008\") { id name role posts { title } } }",
    ] {
        let req = Request {
            query: q.into(),
            operation_name: None,
            variables: None,
        };
        for (_, s) in engine.explain(&req).unwrap() {
            let mut sql = s.sql.clone();
            for (i, p) in s.params.iter().enumerate().rev() {
                let lit = match p {
                    fraiseql::sql::Param::BigInt(n) => n.to_string(),
                    fraiseql::sql::Param::Text(Some(t)) => format!("'{t}'"),
                    other => panic!("{other:?}"),
                };
                sql = sql.replace(&format!("${}", i + 1), &lit);
            }
            println!("{sql};");
        }
    }
}
