//! Change-log retention (`fraiseql db prune`, `[change_log] retention`) against the real
//! PostgreSQL: a prune deletes only rows older than the retention, strictly before every
//! checkpoint (observer readers, the NATS publisher: the reader's checkpoint), and never a
//! row of a transaction still running or after it; `serve` prunes periodically and never
//! what its NATS publisher has not published (a private nats-server, killed); `--dry-run`
//! changes nothing; a bad duration is a clear error and changes nothing; a Flight `events`
//! ticket resuming before the prune horizon is refused instead of skipping rows.

use crate::common;

use std::time::Duration;

use fraiseql::db::changelog::Position;
use fraiseql::db::retention::{self, KeptBy, PruneOptions, PruneReport};
use serde_json::json;

use common::TestDb;

/// Inserts `n` change-log rows in one transaction; returns their positions in order.
async fn log_rows(db: &TestDb, n: i32) -> Vec<Position> {
    let c = db.client().await;
    let rows = c
        .query(
            "INSERT INTO fraiseql.tb_entity_change_log (entity, op, after) \
             SELECT 'order', 'INSERT', jsonb_build_object('n', g) FROM generate_series(1, $1) g \
             RETURNING txid::text, pk",
            &[&n],
        )
        .await
        .unwrap();
    let mut out: Vec<Position> = rows
        .iter()
        .map(|r| Position::from_parts(r.get(0), r.get(1)).unwrap())
        .collect();
    out.sort();
    out
}

/// Makes the rows `positions` ten days old.
async fn age(db: &TestDb, positions: &[Position]) {
    let pks: Vec<i64> = positions.iter().map(|p| p.pk).collect();
    db.client()
        .await
        .execute(
            "UPDATE fraiseql.tb_entity_change_log SET occurred_at = now() - interval '10 days' \
             WHERE pk = ANY($1)",
            &[&pks],
        )
        .await
        .unwrap();
}

/// Sets `consumer`'s durable checkpoint to `at`, as a reader (or the NATS publisher) does.
async fn checkpoint(db: &TestDb, consumer: &str, at: Position) {
    db.client()
        .await
        .execute(
            "INSERT INTO fraiseql.tb_observer_checkpoint (consumer, last_txid, last_pk) \
             VALUES ($1, CAST($2::text AS xid8), $3) \
             ON CONFLICT (consumer) DO UPDATE SET last_txid = EXCLUDED.last_txid, \
             last_pk = EXCLUDED.last_pk",
            &[&consumer, &at.txid.to_string(), &at.pk],
        )
        .await
        .unwrap();
}

async fn prune(db: &TestDb, older_than: Duration) -> PruneReport {
    let mut client = db.client().await;
    let opts = PruneOptions {
        older_than,
        batch: 3,
        dry_run: false,
        required_consumers: Vec::new(),
    };
    let report = retention::prune(&mut client, &opts).await.unwrap();
    eprintln!("{report}");
    report
}

const DAY: Duration = Duration::from_secs(86_400);

fn pks(p: &[Position]) -> Vec<i64> {
    p.iter().map(|p| p.pk).collect()
}

#[tokio::test]
async fn prune_keeps_young_rows_and_what_the_reader_checkpoint_has_not_passed() {
    let _log = common::read_change_log().await;
    let db = TestDb::new().await;
    let rows = log_rows(&db, 10).await;
    age(&db, &rows[..8]).await;
    common::change_log_settled(&db).await;
    // The reader has finished rows 1-5.
    checkpoint(&db, "default", rows[4]).await;

    let r = prune(&db, DAY).await;
    assert_eq!(
        db.change_pks().await,
        pks(&rows[4..]),
        "rows strictly before the checkpoint are deleted, the checkpoint's own row kept"
    );
    assert_eq!(r.rows, 4);
    assert_eq!(r.kept_by, KeptBy::Checkpoint("default".into(), rows[4]));
    assert_eq!(r.horizon, Some(rows[3]));

    // The reader caught up: now the age is the limit (rows 9 and 10 are young).
    checkpoint(&db, "default", rows[9]).await;
    let r = prune(&db, DAY).await;
    assert_eq!(db.change_pks().await, pks(&rows[8..]));
    assert_eq!(r.kept_by, KeptBy::Age);
    assert_eq!(r.horizon, Some(rows[7]));
    // Nothing else qualifies: a second run deletes nothing and keeps the horizon.
    let r = prune(&db, DAY).await;
    assert_eq!(r.rows, 0);
    assert_eq!(r.horizon, Some(rows[7]));
}

#[tokio::test]
async fn prune_keeps_what_the_slowest_checkpoint_needs_and_waits_for_a_reader_without_one() {
    let _log = common::read_change_log().await;
    let db = TestDb::new().await;
    let rows = log_rows(&db, 8).await;
    age(&db, &rows).await;
    common::change_log_settled(&db).await;
    // Two reader groups: the observers (`default`) are ahead; the NATS publisher of another
    // deployment (`nats-publisher`: its reader publishes before its checkpoint moves) lags
    // behind because its NATS is down.
    checkpoint(&db, "default", rows[7]).await;
    checkpoint(&db, "nats-publisher", rows[2]).await;

    // A configuration whose reader (consumer "fresh", publishing to NATS, start_from =
    // "beginning") has not run yet: it will want every row, so nothing goes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(
        &path,
        "[observer_runtime]\nconsumer = \"fresh\"\nstart_from = \"beginning\"\n\
         [nats]\nurl = \"nats://127.0.0.1:1\"\n\
         [[observers]]\nname = \"o\"\nentity = \"order\"\n\
         [[observers.actions]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n",
    )
    .unwrap();
    let out = common::bin()
        .args([
            "--config",
            path.to_str().unwrap(),
            "db",
            "prune",
            "--older-than",
            "1d",
        ])
        .env("FRAISEQL_DATABASE_URL", db.url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(
        stdout.contains("deleted 0 change-log rows")
            && stdout.contains("\"fresh\" has no checkpoint"),
        "{stdout}"
    );
    assert_eq!(db.change_pks().await, pks(&rows));

    let r = prune(&db, DAY).await;
    assert_eq!(
        db.change_pks().await,
        pks(&rows[2..]),
        "the lagging publisher's checkpoint limits the prune"
    );
    assert_eq!(
        r.kept_by,
        KeptBy::Checkpoint("nats-publisher".into(), rows[2])
    );
}

#[tokio::test]
async fn prune_never_deletes_rows_of_a_running_transaction_or_after_it() {
    // No other test may hold a writing transaction open meanwhile (the limit is cluster-wide).
    let _log = common::hold_change_log().await;
    let db = TestDb::new().await;
    let before = log_rows(&db, 2).await;
    common::change_log_settled(&db).await;
    // A transaction that has written a row and is still running...
    let mut c = db.client().await;
    let running = c.transaction().await.unwrap();
    let held: i64 = running
        .query_one(
            "INSERT INTO fraiseql.tb_entity_change_log (entity, op, after) \
             VALUES ('order', 'INSERT', '{}') RETURNING pk",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // ...and rows committed after it started writing.
    let after = log_rows(&db, 2).await;
    age(&db, &before).await;
    age(&db, &after).await;

    let r = prune(&db, DAY).await;
    assert_eq!(r.kept_by, KeptBy::RunningTransaction);
    assert_eq!(
        db.change_pks().await,
        pks(&after),
        "the rows before the running transaction went, the later ones stay"
    );
    running.commit().await.unwrap();
    common::change_log_settled(&db).await;
    let r = prune(&db, DAY).await;
    assert_eq!(r.kept_by, KeptBy::Age, "the held row is young");
    let mut expect = vec![held];
    expect.extend(pks(&after));
    expect.sort();
    assert_eq!(
        db.change_pks().await,
        expect,
        "its row came, behind nothing pruned"
    );
    assert!(r.horizon.unwrap() < Position::from_parts(&held_txid(&db, held).await, held).unwrap());
}

async fn held_txid(db: &TestDb, pk: i64) -> String {
    db.client()
        .await
        .query_one(
            "SELECT txid::text FROM fraiseql.tb_entity_change_log WHERE pk = $1",
            &[&pk],
        )
        .await
        .unwrap()
        .get(0)
}

/// `fraiseql db prune ARGS` on `db` with an empty config file and `env`.
fn db_prune(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(&path, "").unwrap();
    let mut cmd = common::bin();
    cmd.args(["--config", path.to_str().unwrap(), "db", "prune"])
        .args(args)
        .env("FRAISEQL_DATABASE_URL", db.url());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!(
        "db prune {args:?}: {:?}\n{stdout}{stderr}",
        out.status.code()
    );
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[tokio::test]
async fn dry_run_changes_nothing_and_a_bad_duration_is_refused() {
    let _log = common::read_change_log().await;
    let db = TestDb::new().await;
    let rows = log_rows(&db, 6).await;
    age(&db, &rows[..4]).await;
    common::change_log_settled(&db).await;
    let all = pks(&rows);

    let (code, stdout, _) = db_prune(&db, &["--older-than", "1d", "--dry-run"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("would delete 4 change-log rows"),
        "{stdout}"
    );
    assert_eq!(db.change_pks().await, all, "a dry run deletes nothing");
    let c = db.client().await;
    assert!(retention::horizon(&c).await.unwrap().is_none());

    for (args, env, expect_code, expect) in [
        (
            &["--older-than", "7days"][..],
            &[][..],
            1,
            "--older-than: unknown unit `days`",
        ),
        (
            &["--older-than=-1d"][..],
            &[][..],
            1,
            "--older-than: expected a duration",
        ),
        (&[][..], &[][..], 1, "no retention: pass --older-than"),
        (
            &[][..],
            &[("FRAISEQL_CHANGE_LOG_RETENTION", "a week")][..],
            2,
            "change_log.retention",
        ),
    ] {
        let (code, stdout, stderr) = db_prune(&db, args, env);
        assert_eq!(code, expect_code, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(db.change_pks().await, all, "{args:?} changed nothing");
    }

    // The retention from the configuration, for real.
    let (code, stdout, _) = db_prune(&db, &[], &[("FRAISEQL_CHANGE_LOG_RETENTION", "1d")]);
    assert_eq!(code, 0);
    assert!(stdout.contains("deleted 4 change-log rows"), "{stdout}");
    assert_eq!(db.change_pks().await, pks(&rows[4..]));
    assert_eq!(retention::horizon(&c).await.unwrap(), Some(rows[3]));
}

#[tokio::test]
async fn serve_prunes_periodically_when_a_retention_is_set() {
    let _log = common::read_change_log().await;
    let db = TestDb::new().await;
    let rows = log_rows(&db, 5).await;
    age(&db, &rows[..3]).await;
    common::change_log_settled(&db).await;
    let mut config = db.config();
    config.change_log.retention = Some("1d".into());
    config.change_log.prune_interval_ms = 1000;
    let server = common::TestServer::start(config).await;
    common::observers::eventually(Duration::from_secs(10), "serve pruned", || async {
        db.change_pks().await == pks(&rows[3..])
    })
    .await;
    server.stop().await;
}

mod flight {
    use super::*;

    use arrow_flight::{FlightClient, Ticket};
    use common::flight::{TOKEN, TestFlight, config};
    use futures_util::StreamExt;

    /// Reads an events stream to its end: the pks, or the error status.
    async fn events(f: &TestFlight, ticket: serde_json::Value) -> Result<Vec<i64>, tonic::Status> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", f.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = FlightClient::new(channel);
        c.add_header("authorization", &format!("Bearer {TOKEN}"))
            .unwrap();
        let mut s = match c.do_get(Ticket::new(ticket.to_string())).await {
            Ok(s) => s,
            Err(arrow_flight::error::FlightError::Tonic(status)) => return Err(*status),
            Err(e) => panic!("{e}"),
        };
        let mut pks = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(batch) => pks.extend(batch.column(0).as_primitive::<Int64Type>().values()),
                Err(arrow_flight::error::FlightError::Tonic(status)) => return Err(*status),
                Err(e) => panic!("{e}"),
            }
        }
        Ok(pks)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flight_events_resume_before_the_prune_horizon_is_refused() {
        let _log = common::read_change_log().await;
        let db = TestDb::new().await;
        let rows = log_rows(&db, 6).await;
        age(&db, &rows[..4]).await;
        common::change_log_settled(&db).await;
        let f = TestFlight::start(&db, config()).await;
        // A client read rows 1-2 and stopped there.
        let got = events(&f, json!({"type": "events", "limit": 2}))
            .await
            .unwrap();
        assert_eq!(got, pks(&rows[..2]));
        let resume = rows[1].to_string();
        // Before any prune it resumes with exactly the rest.
        let got = events(&f, json!({"type": "events", "after": resume}))
            .await
            .unwrap();
        assert_eq!(got, pks(&rows[2..]));

        let r = prune(&db, DAY).await;
        assert_eq!(r.horizon, Some(rows[3]));
        // Rows 3 and 4, which it never got, are gone: its resume is refused, not skipped.
        let e = events(&f, json!({"type": "events", "after": resume}))
            .await
            .unwrap_err();
        eprintln!("resume from {resume}: {e:?}");
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(
            e.message()
                .contains(&format!("change-log position {resume} was pruned"))
                && e.message().contains(&rows[3].to_string()),
            "{}",
            e.message()
        );
        let e = events(
            &f,
            json!({"type": "events", "after": "0:0", "follow": true}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
        // From the horizon (or later) is fine, and so is starting over.
        let got = events(&f, json!({"type": "events", "after": rows[3].to_string()}))
            .await
            .unwrap();
        assert_eq!(got, pks(&rows[4..]));
        let got = events(&f, json!({"type": "events"})).await.unwrap();
        assert_eq!(got, pks(&rows[4..]), "no after: from the oldest row kept");
    }
}

/// The highest change-log pk `consumer`'s checkpoint has passed (0 without one).
async fn checkpoint_pk(db: &TestDb, consumer: &str) -> i64 {
    db.client()
        .await
        .query_opt(
            "SELECT last_pk FROM fraiseql.tb_observer_checkpoint WHERE consumer = $1",
            &[&consumer],
        )
        .await
        .unwrap()
        .map_or(0, |r| r.get(0))
}

/// The real NATS publisher: `serve` publishing to a private nats-server, pruning every
/// second with a one-day retention, every row ten days old. While NATS is down the reader's
/// checkpoint stays behind the unpublished changes, and the prune keeps them; once NATS is
/// back they are all published (none was pruned away) and only then pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_never_prunes_changes_its_nats_publisher_has_not_published() {
    use common::nats::{PrivateServer, connect, test_config};
    use common::observers::{HttpReceiver, eventually};
    let _log = common::read_change_log().await;
    let mut nats_server = PrivateServer::started();
    let nats = test_config(&nats_server.url());
    let db = TestDb::new().await;
    db.create_posts().await;
    let rx = HttpReceiver::start_ok().await;
    let config = json!({
        "observer_runtime": {
            "poll_interval_ms": 100,
            "checkpoint_interval_ms": 50,
            "start_from": "beginning"
        },
        "nats": common::nats::serve_section(&nats),
        "change_log": {"retention": "1d", "prune_interval_ms": 1000},
        "observers": [{
            "name": "hook",
            "entity": "Post",
            "actions": [{"type": "webhook", "url": rx.url("/hook")}]
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fraiseql.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let serve = common::ServeProcess::start_role(
        &["--config", path.to_str().unwrap(), "serve"],
        &db.url(),
        &[],
    )
    .await;
    let age_all = || async {
        db.batch(
            "UPDATE fraiseql.tb_entity_change_log SET occurred_at = now() - interval '10 days'",
        )
        .await
    };

    for i in 0..3 {
        db.insert_post(&format!("published {i}"), true).await;
    }
    let first = db.change_pks().await;
    eventually(
        Duration::from_secs(15),
        "the first changes published",
        || async { checkpoint_pk(&db, "default").await >= first[2] },
    )
    .await;

    nats_server.kill();
    for i in 0..3 {
        db.insert_post(&format!("unpublished {i}"), true).await;
    }
    let all = db.change_pks().await;
    assert_eq!(all.len(), 6);
    age_all().await;
    eventually(
        Duration::from_secs(10),
        "the published rows pruned",
        || async { db.change_pks().await.len() == 4 },
    )
    .await;
    // Two more prune intervals: nothing the publisher still needs goes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = db.change_pks().await;
    let cp = checkpoint_pk(&db, "default").await;
    eprintln!("NATS down: checkpoint at pk {cp}, rows kept {kept:?} of {all:?}");
    assert_eq!(
        kept,
        all[2..],
        "rows strictly before the publisher's checkpoint pruned; the unpublished ones kept"
    );

    nats_server.start();
    eventually(Duration::from_secs(20), "everything published", || async {
        checkpoint_pk(&db, "default").await >= all[5]
    })
    .await;
    let messages = connect(&nats).await.stream_state().await.unwrap().messages;
    rx.wait_for(6, Duration::from_secs(10)).await;
    age_all().await;
    eventually(
        Duration::from_secs(10),
        "pruned up to the new checkpoint",
        || async { db.change_pks().await == all[5..] },
    )
    .await;
    eprintln!(
        "NATS back: stream holds {messages} messages; rows kept {:?}",
        db.change_pks().await
    );
    assert_eq!(
        messages, 6,
        "every change published, none lost to the prune"
    );
    drop(serve);
}
