//! The blog example as test data: deterministic seed rows generated in Rust (tests compute
//! expected results from these, never from the server's SQL), the blog engine, and helpers to
//! call the GraphQL endpoint in-process.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use deadpool_postgres::Pool;
use fraiseql::graphql::{Engine, Limits};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{TestDb, crate_path};

pub const BLOG_SCHEMA_SQL: &str = include_str!("../../../examples/blog/schema.sql");

impl TestDb {
    /// Loads `examples/blog/schema.sql` and inserts the [`Seed::blog`] rows.
    pub async fn load_blog(&self) -> Seed {
        self.batch(BLOG_SCHEMA_SQL).await;
        let seed = Seed::blog();
        let client = self.client().await;
        seed.insert(&client).await;
        seed
    }
}

#[derive(Debug, Clone)]
pub struct SeedUser {
    pub n: usize,
    pub id: Uuid,
    pub identifier: String,
    pub name: String,
    pub email: Option<String>,
    /// Stored value: admin / author / reader.
    pub role: &'static str,
    pub score: i64,
    pub metadata: Option<Value>,
    pub created_at: DateTime<Utc>,
    /// Indices into `Seed::posts`.
    pub posts: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct SeedPost {
    pub p: usize,
    pub id: Uuid,
    /// Index into `Seed::users`.
    pub author: usize,
    pub title: String,
    pub body: String,
    pub published: bool,
    pub views: i32,
    pub rating: Option<f64>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// Indices into `Seed::comments`.
    pub comments: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct SeedComment {
    pub c: usize,
    pub id: Uuid,
    pub post: usize,
    pub author: usize,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// Deterministic blog rows: 50 users × 3 posts × 2 comments.
#[derive(Debug, Clone)]
pub struct Seed {
    pub users: Vec<SeedUser>,
    pub posts: Vec<SeedPost>,
    pub comments: Vec<SeedComment>,
}

fn seq_uuid(group: &str, n: usize) -> Uuid {
    Uuid::parse_str(&format!("00000000-0000-4000-{group}-{n:012x}")).expect("uuid")
}

impl Seed {
    pub fn blog() -> Seed {
        let base_user = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let base_post = Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap();
        let base_comment = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        let mut users: Vec<SeedUser> = (1..=50)
            .map(|n| SeedUser {
                n,
                id: seq_uuid("8000", n),
                identifier: format!("user-{n:02}"),
                name: format!("User {n:02}"),
                email: (n % 5 != 0).then(|| format!("user{n:02}@example.com")),
                role: if n % 10 == 0 {
                    "admin"
                } else if n % 3 == 0 {
                    "author"
                } else {
                    "reader"
                },
                score: n as i64 * 1_000_000_000,
                metadata: (n % 2 == 0).then(|| json!({ "n": n })),
                created_at: base_user + Duration::days(n as i64),
                posts: Vec::new(),
            })
            .collect();
        let mut posts: Vec<SeedPost> = (1..=150)
            .map(|p| {
                let author = (p - 1) / 3;
                SeedPost {
                    p,
                    id: seq_uuid("9000", p),
                    author,
                    title: format!("Post {p} by {}", users[author].identifier),
                    body: format!(
                        "Body of post {p}{}",
                        if p % 7 == 0 {
                            " with 100% _special_ chars"
                        } else {
                            ""
                        }
                    ),
                    published: p % 2 == 0,
                    views: ((p * 37) % 1000) as i32,
                    rating: (p % 4 != 0).then(|| (p % 50) as f64 / 10.0),
                    tags: vec![format!("tag{}", p % 3), "all".to_owned()],
                    created_at: base_post + Duration::hours(p as i64),
                    comments: Vec::new(),
                }
            })
            .collect();
        let comments: Vec<SeedComment> = (1..=300)
            .map(|c| {
                let p = (c - 1) / 2 + 1;
                SeedComment {
                    c,
                    id: seq_uuid("a000", c),
                    post: p - 1,
                    author: (p + c) % 50,
                    body: format!("Comment {c} on post {p}"),
                    created_at: base_comment + Duration::minutes(c as i64),
                }
            })
            .collect();
        for (i, post) in posts.iter().enumerate() {
            users[post.author].posts.push(i);
        }
        for (i, c) in comments.iter().enumerate() {
            posts[c.post].comments.push(i);
        }
        Seed {
            users,
            posts,
            comments,
        }
    }

    /// Inserts the rows (as a client of the database would, through the write tables).
    pub async fn insert(&self, client: &tokio_postgres::Client) {
        let ids: Vec<Uuid> = self.users.iter().map(|u| u.id).collect();
        let identifiers: Vec<String> = self.users.iter().map(|u| u.identifier.clone()).collect();
        let names: Vec<String> = self.users.iter().map(|u| u.name.clone()).collect();
        let emails: Vec<Option<String>> = self.users.iter().map(|u| u.email.clone()).collect();
        let roles: Vec<String> = self.users.iter().map(|u| u.role.to_owned()).collect();
        let scores: Vec<i64> = self.users.iter().map(|u| u.score).collect();
        let metadata: Vec<Option<Value>> = self.users.iter().map(|u| u.metadata.clone()).collect();
        let created: Vec<DateTime<Utc>> = self.users.iter().map(|u| u.created_at).collect();
        client
            .execute(
                "INSERT INTO tb_user (id, identifier, name, email, role, score, metadata, created_at) \
                 SELECT a,b,c,d,e,f,g,h FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::jsonb[], $8::timestamptz[]) WITH ORDINALITY AS t(a,b,c,d,e,f,g,h,o) ORDER BY o",
                &[&ids, &identifiers, &names, &emails, &roles, &scores, &metadata, &created],
            )
            .await
            .expect("insert users");
        let ids: Vec<Uuid> = self.posts.iter().map(|p| p.id).collect();
        let authors: Vec<Uuid> = self.posts.iter().map(|p| self.users[p.author].id).collect();
        let titles: Vec<String> = self.posts.iter().map(|p| p.title.clone()).collect();
        let bodies: Vec<String> = self.posts.iter().map(|p| p.body.clone()).collect();
        let published: Vec<bool> = self.posts.iter().map(|p| p.published).collect();
        let views: Vec<i32> = self.posts.iter().map(|p| p.views).collect();
        let ratings: Vec<Option<f64>> = self.posts.iter().map(|p| p.rating).collect();
        let tags: Vec<String> = self
            .posts
            .iter()
            .map(|p| serde_json::to_string(&p.tags).unwrap())
            .collect();
        let created: Vec<DateTime<Utc>> = self.posts.iter().map(|p| p.created_at).collect();
        client
            .execute(
                "INSERT INTO tb_post (id, fk_user, title, body, published, views, rating, tags, created_at) \
                 SELECT a, u.pk_user, c, d, e, f, g, ARRAY(SELECT jsonb_array_elements_text(h::jsonb)), i \
                   FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::int4[], $7::float8[], $8::text[], $9::timestamptz[]) WITH ORDINALITY AS t(a,b,c,d,e,f,g,h,i,o) \
                   JOIN tb_user u ON u.id = t.b ORDER BY o",
                &[&ids, &authors, &titles, &bodies, &published, &views, &ratings, &tags, &created],
            )
            .await
            .expect("insert posts");
        let ids: Vec<Uuid> = self.comments.iter().map(|c| c.id).collect();
        let posts: Vec<Uuid> = self
            .comments
            .iter()
            .map(|c| self.posts[c.post].id)
            .collect();
        let authors: Vec<Uuid> = self
            .comments
            .iter()
            .map(|c| self.users[c.author].id)
            .collect();
        let bodies: Vec<String> = self.comments.iter().map(|c| c.body.clone()).collect();
        let created: Vec<DateTime<Utc>> = self.comments.iter().map(|c| c.created_at).collect();
        client
            .execute(
                "INSERT INTO tb_comment (id, fk_post, fk_user, body, created_at) \
                 SELECT a, p.pk_post, u.pk_user, d, e \
                   FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[]) WITH ORDINALITY AS t(a,b,c,d,e,o) \
                   JOIN tb_post p ON p.id = t.b JOIN tb_user u ON u.id = t.c ORDER BY o",
                &[&ids, &posts, &authors, &bodies, &created],
            )
            .await
            .expect("insert comments");
    }

    /// GraphQL enum name of a stored role.
    pub fn role_name(stored: &str) -> &'static str {
        match stored {
            "admin" => "ADMIN",
            "author" => "AUTHOR",
            _ => "READER",
        }
    }
}

/// The blog engine with the given limits.
pub fn blog_engine_with(limits: Limits) -> Engine {
    let schema = fraiseql::schema::load(&crate_path("examples/blog/schema.json")).expect("schema");
    Engine::new(Arc::new(schema), limits).expect("engine")
}

pub fn blog_engine() -> Engine {
    blog_engine_with(Limits::default())
}

/// An HTTP response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    /// The body as received (may be gzip).
    pub raw: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8(self.raw.to_vec()).expect("utf-8 body")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.raw)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.raw))
    }
}

/// Sends an HTTP request to the engine in-process.
pub async fn send(engine: &Engine, pool: &Pool, req: http::Request<Bytes>) -> Reply {
    let resp = fraiseql::graphql::http::handle(engine, pool, None, None, req).await;
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        raw: body,
    }
}

/// POSTs `{"query", "variables"}` as application/json.
pub async fn post(engine: &Engine, pool: &Pool, query: &str, variables: Value) -> Reply {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let req = http::Request::builder()
        .method("POST")
        .uri("/graphql")
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .unwrap();
    send(engine, pool, req).await
}

/// POSTs a query and returns the JSON body (status must be 200).
pub async fn gql(engine: &Engine, pool: &Pool, query: &str, variables: Value) -> Value {
    let r = post(engine, pool, query, variables).await;
    assert_eq!(r.status, 200, "status for {query}: {}", r.text());
    r.json()
}

/// POSTs a query that must succeed without errors; returns `data`.
pub async fn data(engine: &Engine, pool: &Pool, query: &str, variables: Value) -> Value {
    let v = gql(engine, pool, query, variables).await;
    assert!(v.get("errors").is_none(), "errors for {query}: {v}");
    v["data"].clone()
}

/// The error messages and codes of a response.
pub fn errors(v: &Value) -> Vec<(String, String)> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["message"].as_str().unwrap_or_default().to_owned(),
                        e["extensions"]["code"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 3339 text → instant.
pub fn ts(s: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s.as_str().expect("timestamp string"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}
