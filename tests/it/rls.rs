//! Row-level security through both doors, on `examples/rls` (SQL, SDK-exported schema):
//! two tenants' tokens each see and write only their tenant's rows through `/graphql` and
//! through Flight (view ticket, GraphQL ticket, DoPut), with `auth.db_roles` (every request
//! `SET LOCAL ROLE`s to the tenant role) and without (settings only, the login role a
//! non-superuser non-owner and RLS forced). Also Flight's answers to bad tokens
//! (UNAUTHENTICATED, nothing run), a role outside `db_roles` (PERMISSION_DENIED), the
//! `[flight.roles]` allow-lists and the JWT Handshake.
//!
//! Roles are cluster-wide: each test creates uniquely named ones and drops them (after its
//! database) even when it fails.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use arrow_flight::client::FlightClient;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use common::flight::Spawned;
use common::{TestDb, TestServer, crate_path};
use fraiseql::auth::{AuthConfig, Authenticator, JwtConfig};
use fraiseql::flight::{FlightConfig, FlightServer, RoleAccess};
use fraiseql::graphql::{EngineSource, SharedEngine};
use futures_util::{StreamExt, TryStreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SERVICE_TOKEN: &str = "rls-service-token-0123456789";

/// The test's database and roles; dropping it drops the database, then the roles.
struct Rls {
    db: Option<TestDb>,
    login: String,
    tenant: String,
    pool: deadpool_postgres::Pool,
}

impl Rls {
    async fn new(with_db_roles: bool) -> Rls {
        let db = TestDb::new().await;
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let (login, tenant) = (
            format!("rls_login_{suffix}"),
            format!("rls_tenant_{suffix}"),
        );
        let sql = std::fs::read_to_string(crate_path("examples/rls/schema.sql"))
            .unwrap()
            .replace("rls_login", &login)
            .replace("rls_tenant", &tenant);
        let mut rls = Rls {
            pool: db.pool().clone(),
            db: Some(db),
            login: login.clone(),
            tenant: tenant.clone(),
        };
        rls.db().batch(&sql).await;
        rls.db().run_file("examples/rls/seed.sql").await;
        if !with_db_roles {
            // No role switch: the login role itself reads and writes, and RLS still applies
            // because it is neither a superuser nor the tables' owner.
            rls.db()
                .batch(&format!(
                    "GRANT SELECT, INSERT ON tb_order, ta_reading TO {login};
                     GRANT USAGE ON SCHEMA fraiseql TO {login};
                     GRANT SELECT, INSERT, UPDATE ON fraiseql.tb_entity_change_log TO {login};
                     GRANT USAGE ON ALL SEQUENCES IN SCHEMA fraiseql TO {login};
                     GRANT SELECT ON v_order, va_order, va_reading TO {login};"
                ))
                .await;
        }
        let cfg = fraiseql::db::DatabaseConfig {
            url: rls.login_url(),
            pool_size: 4,
            ..Default::default()
        };
        rls.pool = fraiseql::db::pool(&cfg).expect("login pool");
        rls
    }

    fn db(&self) -> &TestDb {
        self.db.as_ref().expect("database until drop")
    }

    fn login_url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:5432/{}",
            self.login,
            self.db().name()
        )
    }

    fn auth(&self, with_db_roles: bool) -> AuthConfig {
        AuthConfig {
            // With db_roles every request runs as one of them, the anonymous role too.
            anonymous_role: self.tenant.clone(),
            db_roles: if with_db_roles {
                vec![self.tenant.clone()]
            } else {
                vec![]
            },
            settings: BTreeMap::from([("app.tenant_id".to_string(), "tenant_id".to_string())]),
            jwt: vec![JwtConfig {
                algorithms: vec!["RS256".into()],
                public_key_file: Some(crate_path("tests/fixtures/jwt/rsa1.pub")),
                required_claims: vec!["exp".into(), "sub".into()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A token of `tenant` with this test's tenant role.
    fn token(&self, tenant: &str) -> String {
        sign("rsa1.key", &self.claims(tenant))
    }

    fn claims(&self, tenant: &str) -> Value {
        json!({"sub": format!("user-{tenant}"), "tenant_id": tenant, "role": self.tenant,
               "exp": now() + 600})
    }

    /// Rows of `table` per tenant, read as the superuser (RLS does not apply to it).
    async fn counts(&self, table: &str) -> BTreeMap<String, i64> {
        let rows = self
            .db()
            .client()
            .await
            .query(
                &format!("SELECT tenant_id, count(*) FROM {table} GROUP BY 1"),
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

impl Drop for Rls {
    fn drop(&mut self) {
        self.pool.close();
        drop(self.db.take());
        common::admin_batch_on_drop(
            [&self.login, &self.tenant]
                .iter()
                .map(|r| format!("DROP ROLE IF EXISTS {r}"))
                .collect(),
        );
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn sign(key_file: &str, claims: &Value) -> String {
    let key = std::fs::read(crate_path(&format!("tests/fixtures/jwt/{key_file}"))).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

fn schema_path() -> String {
    crate_path("examples/rls/schema.json").display().to_string()
}

/// Flight on the login pool with the JWT authenticator, the example's GraphQL schema and
/// the tenant role's allow-lists.
async fn flight(rls: &Rls, auth: &AuthConfig, roles: BTreeMap<String, RoleAccess>) -> Spawned {
    let config = fraiseql::config::Config::default();
    let engine =
        SharedEngine::new(fraiseql::compose::load_engine(&config, &schema_path()).unwrap());
    let authenticator = Arc::new(Authenticator::new(auth).await.unwrap());
    let cfg = FlightConfig {
        tokens: vec![SERVICE_TOKEN.into()],
        put_tables: vec!["ta_reading".into()],
        roles,
        ..Default::default()
    };
    let server = FlightServer::with_auth(cfg, rls.pool.clone(), Some(authenticator))
        .unwrap()
        .with_metrics(fraiseql::metrics::metrics().flight.clone())
        .with_graphql(Arc::new(EngineSource::new(engine, rls.pool.clone())));
    common::flight::spawn(server).await
}

fn tenant_access(rls: &Rls) -> BTreeMap<String, RoleAccess> {
    BTreeMap::from([(
        rls.tenant.clone(),
        RoleAccess {
            views: vec!["va_order".into(), "va_reading".into()],
            events: vec![],
            put_tables: vec!["ta_reading".into()],
        },
    )])
}

async fn client(f: &Spawned, authorization: Option<&str>) -> FlightClient {
    common::flight::client(f.addr, authorization).await
}

fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

async fn fetch(c: &mut FlightClient, ticket: Value) -> Result<Vec<RecordBatch>, tonic::Status> {
    let s = c
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(status)?;
    s.try_collect().await.map_err(status)
}

/// The values of a text column across batches.
fn texts(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(column).expect("column");
        let col = col.as_string::<i32>();
        out.extend((0..col.len()).map(|i| col.value(i).to_string()));
    }
    out
}

async fn put_readings(
    c: &mut FlightClient,
    sensors: &[&str],
    tenant_column: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut fields = vec![
        Field::new("sensor", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ];
    let mut cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from(sensors.to_vec())),
        Arc::new(Float64Array::from(vec![1.0; sensors.len()])),
    ];
    if let Some(t) = tenant_column {
        fields.push(Field::new("tenant_id", DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from(vec![t; sensors.len()])));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["ta_reading".into()])))
        .build(futures_util::stream::iter([Ok(batch)]));
    let results = c.do_put(data).await.map_err(status)?;
    results.try_collect::<Vec<_>>().await.map_err(status)?;
    Ok(())
}

async fn graphql_http(server: &TestServer, token: &str) -> Value {
    post_graphql(
        server,
        token,
        json!({"query": "{ orders { item tenantId } }"}),
    )
    .await
}

async fn post_graphql(server: &TestServer, token: &str, body: Value) -> Value {
    common::http()
        .post(server.url("/graphql"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every door, both tenants: reads see only the token's tenant, DoPut writes only it.
async fn two_tenants(with_db_roles: bool) {
    let rls = Rls::new(with_db_roles).await;
    let auth = rls.auth(with_db_roles);
    let (acme, globex) = (rls.token("acme"), rls.token("globex"));

    // /graphql
    let mut config = rls.db().config();
    config.database.url = rls.login_url();
    config.graphql.schema = schema_path();
    config.auth = Some(auth.clone());
    let server = TestServer::start(config).await;
    let ready = common::flight::eventually(Duration::from_secs(30), || async {
        common::http()
            .get(server.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "serve becomes ready");
    let a = graphql_http(&server, &acme).await;
    let g = graphql_http(&server, &globex).await;
    let tenants = |v: &Value| -> Vec<String> {
        v["data"]["orders"]
            .as_array()
            .unwrap_or_else(|| panic!("orders in {v}"))
            .iter()
            .map(|o| o["tenantId"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(tenants(&a), vec!["acme", "acme"], "{a}");
    assert_eq!(tenants(&g), vec!["globex"], "{g}");
    // A mutation writes the token's tenant (the column default reads the setting).
    let created = post_graphql(
        &server,
        &globex,
        json!({"query": "mutation { createOrder(input: {item: \"parasol\", amount: 3.5}) { item tenantId } }"}),
    )
    .await;
    assert_eq!(
        created["data"]["createOrder"]["tenantId"], "globex",
        "{created}"
    );
    assert_eq!(tenants(&graphql_http(&server, &globex).await).len(), 2);
    assert_eq!(
        tenants(&graphql_http(&server, &acme).await),
        vec!["acme", "acme"]
    );
    server.stop().await;

    // Flight: view ticket, GraphQL ticket, DoPut.
    let f = flight(&rls, &auth, tenant_access(&rls)).await;
    let mut ca = client(&f, Some(&format!("Bearer {acme}"))).await;
    let mut cg = client(&f, Some(&format!("Bearer {globex}"))).await;
    let view = json!({"type": "view", "view": "va_order"});
    let rows = fetch(&mut ca, view.clone()).await.unwrap();
    assert_eq!(texts(&rows, "tenant_id"), vec!["acme", "acme"]);
    let rows = fetch(&mut cg, view).await.unwrap();
    assert_eq!(texts(&rows, "tenant_id"), vec!["globex", "globex"]);
    let gql = json!({"type": "graphql", "query": "{ orders { item tenantId } }"});
    let rows = fetch(&mut ca, gql.clone()).await.unwrap();
    assert_eq!(texts(&rows, "tenantId"), vec!["acme", "acme"]);
    let rows = fetch(&mut cg, gql).await.unwrap();
    assert_eq!(texts(&rows, "tenantId"), vec!["globex", "globex"]);

    let before = rls.counts("ta_reading").await;
    put_readings(&mut ca, &["acme-2", "acme-3"], None)
        .await
        .unwrap();
    put_readings(&mut cg, &["globex-2"], None).await.unwrap();
    let after = rls.counts("ta_reading").await;
    assert_eq!(after["acme"], before["acme"] + 2, "{after:?}");
    assert_eq!(after["globex"], before["globex"] + 1, "{after:?}");
    // Writing the other tenant's rows: the policy's WITH CHECK refuses the whole upload.
    let e = put_readings(&mut ca, &["sneaky"], Some("globex"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("row-level security"), "{e}");
    assert_eq!(rls.counts("ta_reading").await, after);
    let rows = fetch(&mut cg, json!({"type": "view", "view": "va_reading"}))
        .await
        .unwrap();
    assert_eq!(texts(&rows, "sensor"), vec!["globex-1", "globex-2"]);

    // The service token is unrestricted but sets no tenant: RLS shows it nothing.
    let mut cs = client(&f, Some(&format!("Bearer {SERVICE_TOKEN}"))).await;
    let rows = fetch(&mut cs, json!({"type": "view", "view": "va_order"})).await;
    match rows {
        Ok(rows) => assert!(texts(&rows, "tenant_id").is_empty()),
        // With db_roles the login role has no rights of its own: refused, also nothing.
        Err(e) => {
            assert!(with_db_roles, "{e}");
            assert!(e.message().contains("permission denied"), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rls_two_tenants_with_set_local_role() {
    two_tenants(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rls_two_tenants_settings_only() {
    two_tenants(false).await;
}

/// Flight's token attack subset, a role outside db_roles, the allow-lists and Handshake.
#[tokio::test(flavor = "multi_thread")]
async fn rls_flight_token_refusals_and_allow_lists() {
    let rls = Rls::new(true).await;
    let auth = rls.auth(true);
    let f = flight(&rls, &auth, tenant_access(&rls)).await;
    let metrics = fraiseql::metrics::metrics();
    let started = || {
        ["view", "events", "graphql"]
            .iter()
            .map(|k| metrics.flight.streams_started.with_label_values(&[k]).get())
            .sum::<u64>()
    };
    let started_before = started();
    // Flight reaches PostgreSQL only through this pool: emptied now, still empty after the
    // refusals means no connection was taken, so no statement ran.
    rls.pool.retain(|_, _| false);
    assert_eq!(rls.pool.status().size, 0);

    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let mut expired = rls.claims("acme");
    expired["exp"] = json!(now() - 3600);
    let payload = b64(&rls.claims("acme"));
    let attacks: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "authentication required"),
        ("expired", Some(sign("rsa1.key", &expired)), "expired"),
        (
            "bad signature",
            Some(sign("rsa2.key", &rls.claims("acme"))),
            "signature",
        ),
        (
            "alg none",
            Some(format!("{}.{payload}.", b64(&json!({"alg": "none"})))),
            "malformed",
        ),
        (
            "alg None signed",
            Some(format!("{}.{payload}.c2ln", b64(&json!({"alg": "None"})))),
            "algorithm",
        ),
    ];
    for (name, token, says) in attacks {
        let header = token.map(|t| format!("Bearer {t}"));
        let mut c = client(&f, header.as_deref()).await;
        let e = fetch(&mut c, json!({"type": "view", "view": "va_order"}))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{name}: {e}");
        assert!(e.message().contains(says), "{name}: {e}");
        let e = c.list_flights(Bytes::new()).await.map(|_| ()).unwrap_err();
        assert_eq!(status(e).code(), tonic::Code::Unauthenticated, "{name}");
    }
    assert_eq!(
        started(),
        started_before,
        "no stream started for a refused token"
    );

    // A valid token whose role is not in db_roles: PERMISSION_DENIED, nothing run.
    let mut other = rls.claims("acme");
    other["role"] = json!("postgres");
    let mut c = client(&f, Some(&format!("Bearer {}", sign("rsa1.key", &other)))).await;
    let e = fetch(&mut c, json!({"type": "view", "view": "va_order"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert_eq!(started(), started_before);
    assert_eq!(
        rls.pool.status().size,
        0,
        "no connection taken for a refused role"
    );

    // The counter does count: one accepted stream.
    let mut ok = client(&f, Some(&format!("Bearer {}", rls.token("acme")))).await;
    fetch(&mut ok, json!({"type": "view", "view": "va_order"}))
        .await
        .unwrap();
    assert_eq!(started(), started_before + 1);

    // Allow-lists: the tenant role reads va_order but not views outside its list, nor the
    // change log; ListFlights shows only its views.
    rls.db()
        .batch(&format!(
            "CREATE VIEW va_secret WITH (security_invoker = true) AS SELECT 1 AS x;
             GRANT SELECT ON va_secret TO {}",
            rls.tenant
        ))
        .await;
    let mut cs = client(&f, Some(&format!("Bearer {SERVICE_TOKEN}"))).await;
    cs.do_action(arrow_flight::Action::new("refresh", ""))
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let denied_before = metrics
        .auth
        .denied
        .with_label_values(&["flight", &rls.tenant])
        .get();
    let mut ca = client(&f, Some(&format!("Bearer {}", rls.token("acme")))).await;
    for ticket in [
        json!({"type": "view", "view": "va_secret"}),
        json!({"type": "events"}),
        json!({"type": "events", "entity": "Order"}),
    ] {
        let e = fetch(&mut ca, ticket.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{ticket}: {e}");
    }
    assert_eq!(
        metrics
            .auth
            .denied
            .with_label_values(&["flight", &rls.tenant])
            .get(),
        denied_before + 3
    );
    let listed: Vec<String> = ca
        .list_flights(Bytes::new())
        .await
        .unwrap()
        .map(|i| i.unwrap().flight_descriptor.unwrap().path[0].clone())
        .collect()
        .await;
    assert!(listed.contains(&"va_order".to_string()), "{listed:?}");
    assert!(!listed.contains(&"va_secret".to_string()), "{listed:?}");
    assert!(!listed.contains(&"events".to_string()), "{listed:?}");
    let all: Vec<String> = cs
        .list_flights(Bytes::new())
        .await
        .unwrap()
        .map(|i| i.unwrap().flight_descriptor.unwrap().path[0].clone())
        .collect()
        .await;
    assert!(all.contains(&"va_secret".to_string()), "{all:?}");

    // Handshake: a JWT as the Basic password is verified and handed back as the bearer;
    // a bad one is refused.
    use base64::Engine as _;
    let acme = rls.token("acme");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{acme}"));
    let mut h = client(&f, Some(&format!("Basic {basic}"))).await;
    h.handshake(Bytes::new()).await.unwrap();
    let bad = base64::engine::general_purpose::STANDARD
        .encode(format!("user:{}", sign("rsa2.key", &rls.claims("acme"))));
    let mut h = client(&f, Some(&format!("Basic {bad}"))).await;
    let e = status(h.handshake(Bytes::new()).await.unwrap_err());
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
}
