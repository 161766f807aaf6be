//! The SDK's authorization rules, end to end: a schema exported with the SDK
//! (`tests/fixtures/authz/schema.py` → `schema.json`) served by the real binary with
//! `[auth]`, asked over `/graphql` with RS256 tokens signed by the test keys. Role-restricted
//! type, scope reject and mask, `requires_actor`, `inject_params` filtering rows (view column
//! and `data` key) and overriding a client-supplied mutation input, introspection per role,
//! and the refusal metric.

use crate::common;

use common::{ServeProcess, TestDb, crate_path};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISS: &str = "https://authz.test/";

const SETUP: &str = r#"
CREATE TABLE tb_note (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id text NOT NULL,
    title text NOT NULL,
    author_email text,
    cost double precision
);
-- The column is character(3) on purpose: the injected filter compares in the column's own
-- type ('A' = 'A  '), which only the catalog lookup knows (as text they differ).
CREATE VIEW v_note AS
    SELECT id, tenant_id::character(3) AS tenant_id,
           jsonb_build_object('id', id, 'title', title, 'tenant_id', tenant_id,
                              'author_email', author_email, 'cost', cost) AS data
      FROM tb_note;
CREATE TABLE tb_secret (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), note text NOT NULL);
CREATE VIEW v_secret AS
    SELECT id, jsonb_build_object('id', id, 'note', note) AS data FROM tb_secret;
CREATE FUNCTION fn_create_note(input jsonb) RETURNS fraiseql.mutation_response
LANGUAGE plpgsql AS $$
DECLARE v_id uuid;
BEGIN
    INSERT INTO tb_note (tenant_id, title) VALUES (input ->> 'tenant_id', input ->> 'title')
    RETURNING id INTO v_id;
    RETURN fraiseql.mutation_ok(v_id, 'Note', (SELECT data FROM v_note WHERE id = v_id), true,
                                'note created', ARRAY['title', 'tenant_id']);
END;
$$;
INSERT INTO tb_note (tenant_id, title, author_email, cost) VALUES
    ('A', 'a1', 'a1@example.com', 1.5),
    ('A', 'a2', 'a2@example.com', 2.5),
    ('B', 'b1', 'b1@example.com', 9.0);
INSERT INTO tb_secret (note) VALUES ('top secret');
"#;

fn token(extra: Value) -> String {
    let mut claims = json!({
        "sub": "user-1", "iss": ISS, "aud": "fraiseql",
        "exp": jsonwebtoken::get_current_timestamp() + 600,
        "role": "reader", "tenant_id": "A", "actor_type": "human_user",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    let key = std::fs::read(crate_path("tests/fixtures/jwt/rsa1.key")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

struct Setup {
    db: TestDb,
    p: ServeProcess,
    _dir: tempfile::TempDir,
}

async fn serve() -> Setup {
    serve_mode("required").await
}

async fn serve_mode(mode: &str) -> Setup {
    serve_schema(mode, &crate_path("tests/fixtures/authz/schema.json")).await
}

async fn serve_schema(mode: &str, schema: &std::path::Path) -> Setup {
    let db = TestDb::new().await;
    db.batch(SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    let toml = format!(
        r#"
[graphql]
schema = "{schema}"

[auth]
mode = "{mode}"
introspection = true

[[auth.jwt]]
algorithms = ["RS256"]
public_key_file = "{pem}"
issuer = "{ISS}"
audience = ["fraiseql"]
"#,
        schema = schema.display(),
        pem = crate_path("tests/fixtures/jwt/rsa1.pub").display(),
    );
    std::fs::write(&path, toml).unwrap();
    let p = ServeProcess::start_role(
        &["--config", path.to_str().unwrap(), "serve"],
        &db.url(),
        &[],
    )
    .await;
    Setup { db, p, _dir: dir }
}

async fn ask(base: &str, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut req = common::http()
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!(text)),
    )
}

async fn statements(p: &ServeProcess) -> f64 {
    p.metric("fraiseql_graphql_sql_duration_seconds_count{type=\"query\"}")
        .await
}

fn codes(body: &Value) -> Vec<(Value, String)> {
    body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| {
                    (
                        e["path"].clone(),
                        e["extensions"]["code"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn authz_role_restricted_type_is_forbidden_at_its_path_with_no_sql() {
    let s = serve().await;
    let reader = token(json!({}));
    let admin = token(json!({"role": "admin"}));

    let before = statements(&s.p).await;
    let denied_before =
        s.p.metric("fraiseql_auth_denied_total{door=\"http\",role=\"other\"}")
            .await;
    let (status, body) = ask(&s.p.base, Some(&reader), "{ audit { id note } }").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        codes(&body),
        vec![(json!(["audit"]), "FORBIDDEN".into())],
        "{body}"
    );
    // `audit: [AuditEntry!]!` is non-null: the error propagates to `data`.
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(
        statements(&s.p).await,
        before,
        "no SQL ran for a refused root field"
    );
    assert_eq!(
        s.p.metric("fraiseql_auth_denied_total{door=\"http\",role=\"other\"}")
            .await,
        denied_before + 1.0,
        "the refusal is counted, the role `reader` (not named by the schema) as `other`"
    );

    let (status, body) = ask(&s.p.base, Some(&admin), "{ audit { note } }").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"data": {"audit": [{"note": "top secret"}]}}));
}

#[tokio::test]
async fn authz_scope_reject_errors_at_each_path_and_mask_is_null_without_error() {
    let s = serve().await;
    let q = "{ notes(orderBy: [{title: ASC}]) { title authorEmail cost } }";
    let (status, body) = ask(&s.p.base, Some(&token(json!({}))), q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        codes(&body),
        vec![
            (json!(["notes", 0, "cost"]), "FORBIDDEN".into()),
            (json!(["notes", 1, "cost"]), "FORBIDDEN".into()),
        ],
        "{body}"
    );
    // Partial data: the rest of each note is served, the masked field is null.
    assert_eq!(
        body["data"],
        json!({"notes": [
            {"title": "a1", "authorEmail": null, "cost": null},
            {"title": "a2", "authorEmail": null, "cost": null},
        ]}),
        "{body}"
    );

    let scoped = token(json!({"scope": "read:Note.email read:finance"}));
    let (_, body) = ask(&s.p.base, Some(&scoped), q).await;
    assert_eq!(
        body,
        json!({"data": {"notes": [
            {"title": "a1", "authorEmail": "a1@example.com", "cost": 1.5},
            {"title": "a2", "authorEmail": "a2@example.com", "cost": 2.5},
        ]}}),
    );
}

#[tokio::test]
async fn authz_requires_actor_admits_only_the_listed_actor_types() {
    let s = serve().await;
    let q = "{ allNotes { title } }";
    let (_, body) = ask(&s.p.base, Some(&token(json!({}))), q).await;
    assert_eq!(
        body["data"]["allNotes"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    for other in [
        json!({"actor_type": "service_account"}),
        json!({"actor_type": null}),
    ] {
        let (status, body) = ask(&s.p.base, Some(&token(other.clone())), q).await;
        assert_eq!(status, 200);
        assert_eq!(
            codes(&body),
            vec![(json!(["allNotes"]), "FORBIDDEN".into())],
            "{other}: {body}"
        );
        assert_eq!(body["data"], Value::Null);
    }
}

#[tokio::test]
async fn authz_inject_params_filter_rows_and_override_the_client_input() {
    let s = serve().await;
    let q = "{ notes(orderBy: [{title: ASC}]) { title tenantId } }";
    let titles = |body: &Value| -> Vec<String> {
        body["data"]["notes"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|n| n["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, body) = ask(&s.p.base, Some(&token(json!({}))), q).await;
    assert_eq!(titles(&body), ["a1", "a2"]);
    let (_, body) = ask(&s.p.base, Some(&token(json!({"tenant_id": "B"}))), q).await;
    assert_eq!(titles(&body), ["b1"]);
    // A client filter cannot widen it.
    let (_, body) = ask(
        &s.p.base,
        Some(&token(json!({}))),
        r#"{ notes(where: {tenantId: {eq: "B"}}) { title } }"#,
    )
    .await;
    assert_eq!(body["data"]["notes"], json!([]), "{body}");

    // No claim: refused, never everything.
    let before = statements(&s.p).await;
    let (status, body) = ask(&s.p.base, Some(&token(json!({"tenant_id": null}))), q).await;
    assert_eq!(status, 200);
    assert_eq!(
        codes(&body),
        vec![(json!(["notes"]), "FORBIDDEN".into())],
        "{body}"
    );
    assert_eq!(body["data"], Value::Null);
    assert_eq!(statements(&s.p).await, before);

    // The mutation gets the token's tenant whatever the input says.
    let (_, body) = ask(
        &s.p.base,
        Some(&token(json!({}))),
        r#"mutation { createNote(input: {title: "sneaky", tenantId: "B"}) { title tenantId } }"#,
    )
    .await;
    assert_eq!(
        body,
        json!({"data": {"createNote": {"title": "sneaky", "tenantId": "A"}}})
    );
    let row =
        s.db.client()
            .await
            .query_one("SELECT tenant_id FROM tb_note WHERE title = 'sneaky'", &[])
            .await
            .unwrap();
    assert_eq!(row.get::<_, String>(0), "A");

    // A view without a `tenant_id` column: the `data` key filters (the columns are looked
    // up once per process, so a new server sees the new view).
    s.db.batch(
        "DROP VIEW v_note; CREATE VIEW v_note AS SELECT id, jsonb_build_object('id', id, \
         'title', title, 'tenant_id', tenant_id) AS data FROM tb_note;",
    )
    .await;
    let db = s.db;
    drop(s.p);
    let again = ServeProcess::start_role(
        &[
            "--config",
            s._dir.path().join("fraiseql.toml").to_str().unwrap(),
            "serve",
        ],
        &db.url(),
        &[],
    )
    .await;
    let (_, body) = ask(&again.base, Some(&token(json!({"tenant_id": "B"}))), q).await;
    assert_eq!(titles(&body), ["b1"]);
}

#[tokio::test]
async fn authz_introspection_hides_what_the_role_may_not_use() {
    let s = serve().await;
    let q = r#"{ __schema { types { name } queryType { fields { name type { name kind ofType { name kind ofType { name ofType { name } } } } } } }
                 hidden: __type(name: "AuditEntry") { name fields { name } }
                 unnamed: __type(name: "AuditEntry") { kind fields { name } } }"#;
    let names = |body: &Value| -> (Vec<String>, Vec<String>) {
        let types = body["data"]["__schema"]["types"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        let fields = body["data"]["__schema"]["queryType"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        (types, fields)
    };
    let (_, body) = ask(&s.p.base, Some(&token(json!({}))), q).await;
    let (types, fields) = names(&body);
    assert!(
        !types.iter().any(|t| t.starts_with("AuditEntry")),
        "{types:?}"
    );
    assert!(types.contains(&"Note".to_owned()));
    assert_eq!(fields, ["notes", "allNotes"], "{body}");
    assert_eq!(body["data"]["hidden"], Value::Null);
    assert_eq!(body["data"]["unnamed"], Value::Null, "{body}");

    let (_, body) = ask(&s.p.base, Some(&token(json!({"role": "admin"}))), q).await;
    let (types, fields) = names(&body);
    assert!(types.contains(&"AuditEntry".to_owned()), "{types:?}");
    assert_eq!(fields, ["notes", "allNotes", "audit"]);
    assert_eq!(body["data"]["hidden"]["name"], "AuditEntry");
    assert_eq!(body["data"]["unnamed"]["fields"][1]["name"], "note");
}

/// Without `[auth]` every request is unrestricted: role, scope and actor rules pass, but a
/// query with `inject_params` has no claim to filter with and is refused.
#[tokio::test]
async fn authz_unrestricted_identity_passes_rules_but_not_inject_params() {
    let db = TestDb::new().await;
    db.batch(SETUP).await;
    let schema = crate_path("tests/fixtures/authz/schema.json");
    let p = ServeProcess::start(
        &db.url(),
        &[("FRAISEQL_GRAPHQL_SCHEMA", schema.to_str().unwrap())],
    )
    .await;
    let (_, body) = ask(&p.base, None, "{ audit { note } allNotes { cost } }").await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["allNotes"].as_array().unwrap().len(), 3);
    let (_, body) = ask(&p.base, None, "{ notes { title } }").await;
    assert_eq!(
        codes(&body),
        vec![(json!(["notes"]), "FORBIDDEN".into())],
        "{body}"
    );
}

fn fixture() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(crate_path("tests/fixtures/authz/schema.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn authz_compiler_reads_the_sdk_rules() {
    let (s, warnings) =
        fraiseql::schema::compile_str(&fixture().to_string(), "schema.json").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        s.object("AuditEntry").unwrap().requires_role.as_deref(),
        Some("admin")
    );
    let note = s.object("Note").unwrap();
    let email = note.field("authorEmail").unwrap();
    assert_eq!(email.requires_scope.as_deref(), Some("read:Note.email"));
    assert_eq!(email.on_deny, fraiseql::schema::OnDeny::Mask);
    assert_eq!(
        note.field("cost").unwrap().on_deny,
        fraiseql::schema::OnDeny::Reject
    );
    assert_eq!(s.query("allNotes").unwrap().requires_actor, ["human_user"]);
    let inject = &s.query("notes").unwrap().inject;
    assert_eq!(
        (inject[0].param.as_str(), inject[0].claim.as_str()),
        ("tenant_id", "tenant_id")
    );
    assert_eq!(s.mutation("createNote").unwrap().inject.len(), 1);
    // Scoped fields are neither filterable nor sortable (that would reveal them).
    let wi = s.where_input("NoteWhereInput").unwrap();
    assert!(
        !wi.fields
            .iter()
            .any(|f| f.name == "cost" || f.name == "authorEmail")
    );
}

#[test]
fn authz_compiler_refuses_an_unknown_inject_source_naming_the_query() {
    let mut doc = fixture();
    doc["queries"][0]["inject_params"]["tenant_id"]["source"] = json!("header");
    let err = fraiseql::schema::compile_str(&doc.to_string(), "schema.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("queries[notes]") && err.contains("`header`"),
        "{err}"
    );
}

#[test]
fn authz_compiler_makes_a_masked_non_null_field_nullable() {
    let mut doc = fixture();
    doc["types"][0]["fields"][3]["nullable"] = json!(false);
    let (s, warnings) = fraiseql::schema::compile_str(&doc.to_string(), "schema.json").unwrap();
    let f = s.object("Note").unwrap().field("authorEmail").unwrap();
    assert!(f.ty.nullable);
    assert!(
        warnings
            .iter()
            .any(|w| w.to_string().contains("compiled as nullable")),
        "{warnings:?}"
    );
}

/// `inject_defaults` as the SDK exports `fraiseql.toml`'s `[inject_defaults]`: applied to
/// every query or mutation except those that opt out; an operation's own entry wins.
#[test]
fn authz_compiler_applies_inject_defaults() {
    let mut doc = fixture();
    doc["inject_defaults"] = json!({
        "base": {"org": "jwt:org_id", "tenant_id": "jwt:other"},
        "queries": {"region": "jwt:region"},
        "mutations": {"user_id": "jwt_optional:sub"},
    });
    doc["queries"][1]["exclude_inject_defaults"] = json!(["org", "region", "tenant_id"]);
    let (s, _) = fraiseql::schema::compile_str(&doc.to_string(), "schema.json").unwrap();
    let pairs = |inject: &[fraiseql::schema::InjectParam]| -> Vec<(String, String, bool)> {
        let mut v: Vec<_> = inject
            .iter()
            .map(|i| (i.param.clone(), i.claim.clone(), i.optional))
            .collect();
        v.sort();
        v
    };
    let own = |p: &str, c: &str, o: bool| (p.to_owned(), c.to_owned(), o);
    assert_eq!(
        pairs(&s.query("notes").unwrap().inject),
        [
            own("org", "org_id", false),
            own("region", "region", false),
            own("tenant_id", "tenant_id", false)
        ]
    );
    assert!(s.query("allNotes").unwrap().inject.is_empty());
    assert_eq!(
        pairs(&s.mutation("createNote").unwrap().inject),
        [
            own("org", "org_id", false),
            own("tenant_id", "tenant_id", false),
            own("user_id", "sub", true)
        ]
    );
    doc["queries"][1]["exclude_inject_defaults"] = json!(["nope"]);
    let err = fraiseql::schema::compile_str(&doc.to_string(), "schema.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("queries[allNotes]") && err.contains("`nope`"),
        "{err}"
    );
}

/// A Flight GraphQL ticket plans through the same engine: with a static service token (an
/// unrestricted identity) role and actor rules pass, and a query with `inject_params` has no
/// claim and is refused (PermissionDenied), counted with `door="flight"`.
#[tokio::test]
async fn authz_flight_graphql_ticket_follows_the_same_rules() {
    use arrow_flight::Ticket;
    use common::flight::{TOKEN, TestFlight, config};
    use futures_util::TryStreamExt;
    use std::sync::Arc;

    let db = TestDb::new().await;
    db.batch(SETUP).await;
    let schema =
        fraiseql::schema::load(&crate_path("tests/fixtures/authz/schema.json")).expect("schema");
    let engine = fraiseql::graphql::SharedEngine::new(
        fraiseql::graphql::Engine::new(Arc::new(schema), Default::default()).expect("engine"),
    );
    let source = fraiseql::graphql::EngineSource::new(engine, db.pool().clone());
    let f = TestFlight::start_with(&db, config(), Some(Arc::new(source))).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = arrow_flight::client::FlightClient::new(channel);
    c.add_header("authorization", &format!("Bearer {TOKEN}"))
        .unwrap();
    let ticket = |q: &str| Ticket::new(json!({"type": "graphql", "query": q}).to_string());

    let batches: Vec<arrow_array::RecordBatch> = c
        .do_get(ticket("{ allNotes { title cost } }"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    let denied = || {
        fraiseql::metrics::metrics()
            .auth
            .denied
            .with_label_values(&["flight", "other"])
            .get()
    };
    let before = denied();
    let err = match c.do_get(ticket("{ notes { title } }")).await {
        Err(e) => e,
        Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
    };
    let arrow_flight::error::FlightError::Tonic(status) = err else {
        panic!("{err:?}");
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("tenant_id"), "{status:?}");
    assert_eq!(denied(), before + 1);
}

/// With `mode = "optional"` a request without a token is the anonymous role: refused what
/// it may not read, and counted as `role="anon"`.
#[tokio::test]
async fn authz_anonymous_role_is_refused_and_counted_as_anon() {
    let s = serve_mode("optional").await;
    let series = "fraiseql_auth_denied_total{door=\"http\",role=\"anon\"}";
    let before = s.p.metric(series).await;
    let (status, body) = ask(&s.p.base, None, "{ audit { id } }").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        codes(&body),
        vec![(json!(["audit"]), "FORBIDDEN".into())],
        "{body}"
    );
    assert_eq!(s.p.metric(series).await, before + 1.0);
}

/// A field of an open type returning a role-restricted type: withheld with an error at each
/// of its paths (the rest served), and not offered as a `where` filter to anyone.
#[tokio::test]
async fn authz_nested_field_of_a_restricted_type_is_forbidden_at_each_path() {
    let mut doc = fixture();
    doc["types"][0]["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "audit", "type": "AuditEntry", "nullable": true}));
    let (s, _) = fraiseql::schema::compile_str(&doc.to_string(), "schema.json").unwrap();
    let wi = s.where_input("NoteWhereInput").unwrap();
    assert!(!wi.fields.iter().any(|f| f.name == "audit"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let s = serve_schema("required", &path).await;
    let q = "{ notes(orderBy: [{title: ASC}]) { title audit { note } } }";
    let (status, body) = ask(&s.p.base, Some(&token(json!({}))), q).await;
    assert_eq!(status, 200);
    assert_eq!(
        codes(&body),
        vec![
            (json!(["notes", 0, "audit"]), "FORBIDDEN".into()),
            (json!(["notes", 1, "audit"]), "FORBIDDEN".into()),
        ],
        "{body}"
    );
    assert_eq!(
        body["data"],
        json!({"notes": [{"title": "a1", "audit": null}, {"title": "a2", "audit": null}]})
    );
    let (_, body) = ask(&s.p.base, Some(&token(json!({"role": "admin"}))), q).await;
    assert!(body.get("errors").is_none(), "{body}");
}

/// The refusal metric's role label: a role of the configured `auth.db_roles` is its own
/// label (bounded by the config) even when no `requires_role` names it; a role from a token
/// that is neither is `other`.
#[tokio::test]
async fn authz_denied_metric_labels_configured_db_roles() {
    let db = TestDb::new().await;
    db.batch(SETUP).await;
    let schema =
        fraiseql::schema::load(&crate_path("tests/fixtures/authz/schema.json")).expect("schema");
    let engine =
        fraiseql::graphql::Engine::new(std::sync::Arc::new(schema), Default::default()).unwrap();
    let denied = |role: &str| {
        fraiseql::metrics::metrics()
            .auth
            .denied
            .with_label_values(&["http", role])
            .get()
    };
    let req = fraiseql::graphql::Request {
        query: "{ audit { id } }".into(),
        operation_name: None,
        variables: None,
    };
    let db_roles = ["web_user".to_string()];
    let cases = [
        (
            fraiseql::auth::Identity::principal("svc", "web_user", &db_roles).unwrap(),
            "web_user",
        ),
        (
            fraiseql::auth::Identity::principal("svc", "web_user", &[]).unwrap(),
            "other",
        ),
    ];
    for (identity, label) in cases {
        let (before, other_before) = (denied(label), denied("other"));
        let out = engine.execute(db.pool(), &identity, &req, false).await;
        let body: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(
            codes(&body),
            vec![(json!(["audit"]), "FORBIDDEN".into())],
            "{body}"
        );
        assert_eq!(denied(label), before + 1, "{label}");
        if label != "other" {
            assert_eq!(denied("other"), other_before, "not counted as other");
        }
    }
}
