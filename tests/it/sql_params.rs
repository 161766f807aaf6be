//! Property: every statement the GraphQL engine generates is parameterised. Seeded random
//! requests over the blog schema put hostile client values (quotes, SQL fragments, unicode,
//! LIKE metacharacters, numbers, UUIDs, dates) into `where` filters, nested filters,
//! `orderBy`, `limit`/`offset` and field arguments, as literals and as variables;
//! `Engine::explain` plans them without a database, and no client string (3+ characters)
//! may appear in any statement's SQL text, while each must appear among its parameters.

use fraiseql::graphql::execute::Request;
use fraiseql::sql::Param;
use fraiseql::sql::condition::like_escape;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

use crate::common::blog_engine;

/// Client strings that would change the statement if they were spliced into it.
const HOSTILE: [&str; 16] = [
    "'; DROP TABLE x; --",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "x'); DELETE FROM tb_user; --",
    "$$; SELECT pg_sleep(10); $$",
    "\\'; --",
    "/* c */ UNION SELECT",
    "%_\\%",
    "é😀ßΩ",
    "汉字テスト",
    "Robert'); --",
    "a\nb\tc\r",
    "E'\\x41'",
    "\"data\"->>'id' --",
    "'::text[] --",
    "«»‘’“”",
];

struct Gen {
    rng: StdRng,
    /// Every client string put into the request, with its original form.
    strings: Vec<String>,
    vars: Map<String, Value>,
    decls: Vec<String>,
}

impl Gen {
    /// A distinctive hostile string: fragments plus a random tag.
    fn text(&mut self) -> String {
        let n = self.rng.random_range(1..=3);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(HOSTILE[self.rng.random_range(0..HOSTILE.len())]);
        }
        if self.rng.random_bool(0.5) {
            s.push_str(&format!("~{}", self.rng.random_range(100_000u32..999_999)));
        }
        self.strings.push(s.clone());
        s
    }

    fn uuid(&mut self) -> String {
        let s = uuid::Uuid::from_u128(self.rng.random_range(1u128..u128::MAX)).to_string();
        self.strings.push(s.clone());
        s
    }

    fn datetime(&mut self) -> String {
        let s = format!(
            "20{:02}-{:02}-{:02}T{:02}:{:02}:00Z",
            self.rng.random_range(0..40),
            self.rng.random_range(1..=12),
            self.rng.random_range(1..=28),
            self.rng.random_range(0..24),
            self.rng.random_range(0..60),
        );
        self.strings.push(s.clone());
        s
    }

    /// A value in GraphQL source: a variable (declared with `ty`) or an inline literal.
    fn place(&mut self, value: Value, ty: &str) -> String {
        if self.rng.random_bool(0.5) {
            let name = format!("v{}", self.vars.len());
            self.decls.push(format!("${name}: {ty}"));
            self.vars.insert(name.clone(), value);
            format!("${name}")
        } else {
            literal(&value)
        }
    }

    /// One `{field: {op: value}}` of a `where` for the blog type `ty`.
    fn condition(&mut self, ty: &str) -> String {
        let string_ops = [
            "eq",
            "neq",
            "gt",
            "lte",
            "contains",
            "icontains",
            "startswith",
            "iendswith",
            "like",
            "ilike",
        ];
        let fields: &[&str] = match ty {
            "User" => &["name", "identifier", "email", "id", "createdAt", "score"],
            "Post" => &["title", "body", "id", "createdAt", "views", "author"],
            _ => &["body", "id", "createdAt", "author"],
        };
        let field = fields[self.rng.random_range(0..fields.len())];
        match field {
            "author" => {
                let f = ["name", "identifier"][self.rng.random_range(0..2)];
                let v = Value::String(self.text());
                let v = self.place(v, "String");
                format!("author: {{{f}: {{eq: {v}}}}}")
            }
            "id" => {
                let (op, v, ty) = if self.rng.random_bool(0.5) {
                    ("eq", Value::String(self.uuid()), "ID")
                } else {
                    let ids = (0..self.rng.random_range(1..4))
                        .map(|_| Value::String(self.uuid()))
                        .collect();
                    ("in", Value::Array(ids), "[ID!]")
                };
                format!("id: {{{op}: {}}}", self.place(v, ty))
            }
            "createdAt" => {
                let op = ["gt", "lte", "eq"][self.rng.random_range(0..3)];
                let v = Value::String(self.datetime());
                format!("createdAt: {{{op}: {}}}", self.place(v, "DateTime"))
            }
            "score" | "views" => {
                let op = ["gt", "lt", "eq", "neq"][self.rng.random_range(0..4)];
                let v = json!(self.rng.random_range(-1_000_000i64..1_000_000));
                let ty = if field == "score" { "BigInt" } else { "Int" };
                format!("{field}: {{{op}: {}}}", self.place(v, ty))
            }
            _ => {
                if self.rng.random_bool(0.2) {
                    let op = ["in", "nin"][self.rng.random_range(0..2)];
                    let vs = (0..self.rng.random_range(1..4))
                        .map(|_| Value::String(self.text()))
                        .collect();
                    format!(
                        "{field}: {{{op}: {}}}",
                        self.place(Value::Array(vs), "[String!]")
                    )
                } else {
                    let op = string_ops[self.rng.random_range(0..string_ops.len())];
                    let v = Value::String(self.text());
                    format!("{field}: {{{op}: {}}}", self.place(v, "String"))
                }
            }
        }
    }

    /// A `where` object, sometimes with `_and` / `_or` / `_not`.
    fn filter(&mut self, ty: &str, depth: usize) -> String {
        let mut parts = vec![self.condition(ty)];
        if depth < 2 && self.rng.random_bool(0.3) {
            let a = self.filter(ty, depth + 1);
            let b = self.filter(ty, depth + 1);
            let op = ["_and", "_or"][self.rng.random_range(0..2)];
            parts.push(format!("{op}: [{a}, {b}]"));
        }
        if depth < 2 && self.rng.random_bool(0.2) {
            parts.push(format!("_not: {}", self.filter(ty, depth + 1)));
        }
        format!("{{{}}}", parts.join(", "))
    }

    fn paging(&mut self) -> String {
        let mut args = Vec::new();
        if self.rng.random_bool(0.6) {
            let v = json!(self.rng.random_range(0..500));
            args.push(format!("limit: {}", self.place(v, "Int!")));
        }
        if self.rng.random_bool(0.4) {
            let v = json!(self.rng.random_range(0..10_000));
            args.push(format!("offset: {}", self.place(v, "Int!")));
        }
        args.join(", ")
    }

    /// One root field.
    fn root(&mut self, i: usize) -> String {
        match self.rng.random_range(0..6) {
            0 => {
                let w = self.filter("User", 0);
                let p = self.paging();
                let dir = ["ASC", "DESC"][self.rng.random_range(0..2)];
                format!(
                    "r{i}: users(where: {w}, orderBy: [{{name: {dir}}}], {p}) {{ id name posts {{ title }} }}"
                )
            }
            1 => {
                let w = self.filter("Post", 0);
                let p = self.paging();
                format!("r{i}: posts(where: {w} {p}) {{ id title tags author {{ name }} }}")
            }
            2 => {
                let w = self.filter("Comment", 0);
                format!("r{i}: comments(where: {w}) {{ id body }}")
            }
            3 => {
                let v = Value::String(self.uuid());
                let op = ["user", "post"][self.rng.random_range(0..2)];
                format!("r{i}: {op}(id: {}) {{ id }}", self.place(v, "UUID!"))
            }
            4 => {
                let v = Value::String(self.text());
                format!(
                    "r{i}: userByIdentifier(identifier: {}) {{ id }}",
                    self.place(v, "String!")
                )
            }
            _ => {
                let w = self.filter("Post", 0);
                let p = self.paging();
                format!(
                    "r{i}: posts(where: {w}, orderBy: [{{views: DESC}}, {{title: ASC}}], {p}) {{ id comments {{ body }} }}"
                )
            }
        }
    }
}

/// A JSON value as a GraphQL literal (JSON string escapes are GraphQL's).
fn literal(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(literal).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

fn json_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

#[test]
fn every_generated_statement_is_parameterised() {
    let engine = blog_engine();
    let mut statements = 0;
    let mut checked = 0;
    for seed in 0..400u64 {
        let mut g = Gen {
            rng: StdRng::seed_from_u64(seed),
            strings: Vec::new(),
            vars: Map::new(),
            decls: Vec::new(),
        };
        let roots: Vec<String> = (0..g.rng.random_range(1..=3)).map(|i| g.root(i)).collect();
        let decls = if g.decls.is_empty() {
            String::new()
        } else {
            format!("({})", g.decls.join(", "))
        };
        let query = format!("query{decls} {{ {} }}", roots.join(" "));
        let req = Request {
            query: query.clone(),
            operation_name: None,
            variables: Some(Value::Object(g.vars.clone())),
        };
        let stmts = engine
            .explain(&req)
            .unwrap_or_else(|e| panic!("seed {seed}: the request was refused: {e}\n{query}"));
        let sql: Vec<&str> = stmts.iter().map(|(_, s)| s.sql.as_str()).collect();
        let mut params: Vec<&str> = Vec::new();
        for (_, s) in &stmts {
            for p in &s.params {
                match p {
                    Param::Text(Some(t)) => params.push(t.as_str()),
                    Param::TextArray(ts) => params.extend(ts.iter().flatten().map(String::as_str)),
                    Param::Json(v) => json_strings(v, &mut params),
                    Param::Text(None) | Param::BigInt(_) => {}
                }
            }
        }
        statements += stmts.len();
        for v in g.strings.iter().filter(|v| v.chars().count() >= 3) {
            for text in &sql {
                assert!(
                    !text.contains(v.as_str()),
                    "seed {seed}: client value {v:?} is in the SQL text:\n{text}"
                );
            }
            let escaped = like_escape(v);
            assert!(
                params
                    .iter()
                    .any(|p| p.contains(v.as_str()) || p.contains(&escaped)),
                "seed {seed}: client value {v:?} is not among the parameters {params:?}\n{query}"
            );
            checked += 1;
        }
    }
    eprintln!("{statements} statements, {checked} client values checked");
    assert!(statements >= 400, "{statements} statements");
    assert!(checked >= 1000, "{checked} values checked");
}
