//! Authentication on Flight: the token attack suite of `/graphql` (the list in
//! `common::jwt`, against the same two verifiers) sent as `authorization: Bearer` metadata
//! on DoGet of a view ticket and of a GraphQL ticket, each answered UNAUTHENTICATED with no
//! statement reaching PostgreSQL: Flight (and its GraphQL tickets) reach the database only
//! through one pool, emptied before the attacks and still empty after them.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_flight::Ticket;
use arrow_flight::error::FlightError;
use common::TestDb;
use common::flight::client;
use common::jwt::{Idp, auth_config, good_tokens, jwk, token_attacks, unknown_kid_tokens};
use fraiseql::auth::Authenticator;
use fraiseql::flight::{FlightConfig, FlightServer, RoleAccess};
use fraiseql::graphql::{EngineSource, SharedEngine};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

/// The ticket's rows, or the gRPC status it was refused with.
async fn rows(
    c: &mut arrow_flight::client::FlightClient,
    ticket: &Value,
) -> Result<usize, tonic::Status> {
    let status = |e: FlightError| match e {
        FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other}"),
    };
    let batches: Vec<arrow_array::RecordBatch> = c
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(status)?
        .try_collect()
        .await
        .map_err(status)?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_token_attack_is_unauthenticated_on_flight_and_no_statement_reaches_postgresql() {
    let db = TestDb::new().await;
    db.load_blog().await;
    db.batch("CREATE VIEW va_post AS SELECT id, title FROM tb_post")
        .await;
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let auth = auth_config(&idp, "", 3600);
    let authenticator = Arc::new(Authenticator::new(&auth).await.unwrap());

    // Flight's own pool: every statement of a view or GraphQL ticket goes through it.
    let pool = fraiseql::db::pool(&fraiseql::db::DatabaseConfig {
        url: db.url(),
        pool_size: 4,
        ..Default::default()
    })
    .expect("pool");
    let schema = common::crate_path("examples/blog/schema.json");
    let engine = SharedEngine::new(
        fraiseql::compose::load_engine(
            &fraiseql::config::Config::default(),
            schema.to_str().unwrap(),
        )
        .unwrap(),
    );
    let cfg = FlightConfig {
        tokens: vec![common::flight::TOKEN.into()],
        roles: BTreeMap::from([(
            "reader".to_string(),
            RoleAccess {
                views: vec!["va_post".into()],
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    let server = FlightServer::with_auth(cfg, pool.clone(), Some(authenticator))
        .unwrap()
        .with_graphql(Arc::new(EngineSource::new(engine, pool.clone())));
    let flight = common::flight::spawn(server).await;
    let addr = flight.addr;

    let view = json!({"type": "view", "view": "va_post"});
    let graphql = json!({"type": "graphql", "query": "{ posts(limit: 2) { title } }"});
    // Both verifiers' tokens read both tickets.
    for token in good_tokens() {
        let mut c = client(addr, Some(&format!("Bearer {token}"))).await;
        assert!(rows(&mut c, &view).await.unwrap() >= 2);
        assert_eq!(rows(&mut c, &graphql).await.unwrap(), 2);
    }
    let fetches_before = idp.fetches();
    // Emptied now, still empty after the refusals: no connection was taken, so no
    // statement reached PostgreSQL.
    pool.retain(|_, _| false);
    assert_eq!(pool.status().size, 0);

    let attacks = token_attacks(&idp);
    let unknown_kids = unknown_kid_tokens(20);
    let mut calls = 0;
    let named = attacks
        .iter()
        .map(|(what, t)| (*what, Some(t.as_str())))
        .chain(
            unknown_kids
                .iter()
                .map(|t| ("an unknown kid", Some(t.as_str()))),
        )
        .chain([("no token", None)]);
    for (what, token) in named {
        let header = token.map(|t| format!("Bearer {t}"));
        let mut c = client(addr, header.as_deref()).await;
        for ticket in [&view, &graphql] {
            let e = rows(&mut c, ticket).await.unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::Unauthenticated,
                "{what} on {ticket}: {e}"
            );
            if let Some(t) = token {
                assert!(
                    !e.message().contains(&t[..20]),
                    "{what}: the token is never echoed"
                );
            }
            calls += 1;
        }
    }
    assert_eq!(
        pool.status().size,
        0,
        "no refused call took a connection, so no statement ran"
    );
    let unknown_kid_fetches = idp.fetches() - fetches_before;
    assert!(
        unknown_kid_fetches <= 1,
        "{unknown_kid_fetches} JWKS fetches for 20 unknown kids"
    );
    assert_eq!(idp.other_requests(), 0, "jku/x5u were never fetched");
    let refused = fraiseql::metrics::metrics()
        .auth
        .outcomes
        .with_label_values(&["flight", "bad_signature"])
        .get();
    assert!(refused >= 3, "refusals are counted by reason ({refused})");

    // The pool still serves an accepted token afterwards.
    let mut c = client(addr, Some(&format!("Bearer {}", good_tokens()[0]))).await;
    assert_eq!(rows(&mut c, &graphql).await.unwrap(), 2);
    eprintln!(
        "{} attacks + 20 unknown kids + 1 missing token, view and GraphQL tickets: {calls} \
         calls UNAUTHENTICATED, {unknown_kid_fetches} JWKS fetch, 0 connections taken",
        attacks.len()
    );
}

/// A role's `statement_timeout_ms` (`[graphql.roles.<role>]`) bounds its GraphQL tickets on
/// Flight as it bounds its `/graphql` requests: the slow read is cancelled for the analyst
/// and served to the reader, and the pool's connections keep no timeout afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_roles_statement_timeout_bounds_its_graphql_tickets() {
    let db = TestDb::new().await;
    db.load_blog().await;
    db.batch(
        "CREATE FUNCTION slow_ok() RETURNS boolean LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.3); RETURN true; END $$; \
         ALTER VIEW v_post RENAME TO v_post_all; \
         CREATE VIEW v_post AS SELECT * FROM v_post_all WHERE (SELECT slow_ok());",
    )
    .await;
    let idp = Idp::start(json!({"keys": [jwk("rsa2.key", "idp-1")]}), 3600).await;
    let auth = auth_config(&idp, "role_claim = \"role\"", 3600);
    let authenticator = Arc::new(Authenticator::new(&auth).await.unwrap());
    let pool = fraiseql::db::pool(&fraiseql::db::DatabaseConfig {
        url: db.url(),
        pool_size: 2,
        ..Default::default()
    })
    .expect("pool");
    let config: fraiseql::config::Config =
        toml::from_str("[graphql.roles.analyst]\nstatement_timeout_ms = 100\n").unwrap();
    let schema = common::crate_path("examples/blog/schema.json");
    let engine = SharedEngine::new(
        fraiseql::compose::load_engine(&config, schema.to_str().unwrap()).unwrap(),
    );
    let server =
        FlightServer::with_auth(FlightConfig::default(), pool.clone(), Some(authenticator))
            .unwrap()
            .with_graphql(Arc::new(EngineSource::new(engine, pool.clone())));
    let flight = common::flight::spawn(server).await;
    let token = |role: &str| {
        let mut c = common::jwt::claims(common::jwt::STATIC_ISS);
        c["role"] = json!(role);
        format!("Bearer {}", common::jwt::rs256("rsa1.key", None, &c))
    };
    let slow = json!({"type": "graphql", "query": "{ posts(limit: 1) { title } }"});
    let mut reader = client(flight.addr, Some(&token("reader"))).await;
    assert_eq!(rows(&mut reader, &slow).await.unwrap(), 1);
    let mut analyst = client(flight.addr, Some(&token("analyst"))).await;
    let started = std::time::Instant::now();
    let e = rows(&mut analyst, &slow).await.unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(290),
        "cancelled at 100 ms, not after the 300 ms read: {:?}",
        started.elapsed()
    );
    assert!(!e.message().contains("slow_ok"), "{e}");
    assert_ne!(e.code(), tonic::Code::Ok);
    // The timeout was the transaction's own.
    assert_eq!(rows(&mut reader, &slow).await.unwrap(), 1);
}
