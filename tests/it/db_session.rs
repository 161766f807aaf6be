//! The request session (`fraiseql::db::Session`), the one place where a request's context
//! becomes database state for both doors: settings are transaction-local and gone once the
//! request ends, an anonymous request opens no transaction, and a request dropped mid-query
//! cancels its statement on the server.

use std::time::Duration;

use fraiseql::db::{RequestContext, Session};

use crate::common::TestDb;

async fn setting(client: &tokio_postgres::Client, name: &str) -> Option<String> {
    client
        .query_one("SELECT nullif(current_setting($1, true), '')", &[&name])
        .await
        .expect("current_setting")
        .get(0)
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_context_is_seen_by_the_request_and_gone_after_it() {
    let db = TestDb::empty().await;
    let pool = db.pool();
    let ctx = RequestContext::anonymous()
        .with_setting("app.user_id", "user-7")
        .with_setting("request.jwt.claims", r#"{"sub":"user-7"}"#);
    let session = Session::start(pool.get().await.unwrap(), &ctx)
        .await
        .expect("session");
    assert_eq!(
        setting(session.client(), "app.user_id").await.as_deref(),
        Some("user-7")
    );
    assert_eq!(
        setting(session.client(), "request.jwt.claims")
            .await
            .as_deref(),
        Some(r#"{"sub":"user-7"}"#)
    );
    let pid = backend_pid(session.client()).await;
    session.finish().await.expect("finish");
    // The pool's only idle connection is the one the session used: the setting is gone.
    let client = pool.get().await.unwrap();
    let again = backend_pid(&client).await;
    assert_eq!(
        again, pid,
        "the finished session's connection went back to the pool"
    );
    assert_eq!(setting(&client, "app.user_id").await, None);
}

#[tokio::test]
async fn an_anonymous_request_opens_no_transaction() {
    let db = TestDb::empty().await;
    let session = Session::start(db.pool().get().await.unwrap(), &RequestContext::anonymous())
        .await
        .expect("session");
    let c = session.client();
    let first: chrono::DateTime<chrono::Utc> =
        c.query_one("SELECT now()", &[]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second: chrono::DateTime<chrono::Utc> =
        c.query_one("SELECT now()", &[]).await.unwrap().get(0);
    // Inside a transaction now() is the transaction's start and would not move.
    assert!(second > first, "each statement ran in its own transaction");
    session.finish().await.unwrap();
}

#[tokio::test]
async fn a_session_dropped_mid_query_cancels_the_statement() {
    let db = TestDb::empty().await;
    let ctx = RequestContext::anonymous().with_setting("app.marker", "cancel-me");
    let session = Session::start(db.pool().get().await.unwrap(), &ctx)
        .await
        .expect("session");
    let pid = backend_pid(session.client()).await;
    // PostgreSQL answers the statement's first message only once it has output, so the
    // future stays pending while the statement runs.
    let running = session.client().query_raw(
        "SELECT pg_sleep(30), current_setting('app.marker')",
        std::iter::empty::<&str>(),
    );
    let mut running = Box::pin(running);
    let admin = db.client().await;
    let state = async || -> Option<String> {
        admin
            .query_opt("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap()
            .and_then(|r| r.get(0))
    };
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            r = &mut running => panic!("the statement ended early: {:?}", r.err()),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if state().await.as_deref() == Some("active") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the statement runs"
        );
    }
    // The request goes away mid-statement.
    drop(running);
    drop(session);
    let dropped = std::time::Instant::now();
    loop {
        match state().await.as_deref() {
            Some("active") | Some("idle in transaction") => {}
            // Cancelled (then closed): the backend is gone or its transaction aborted.
            _ => break,
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "the dropped session's statement was cancelled within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
