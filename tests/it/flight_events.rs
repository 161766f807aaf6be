//! Events tickets and late commits, read with the Rust Flight client (arrow-flight) so each
//! batch's `app_metadata` is visible: a change whose transaction took a lower pk but commits
//! after a higher pk was streamed is still delivered, exactly once, and the resume position
//! every batch carries gives exactly the rest of the stream.

use crate::common;

use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::{FlightClient, Ticket};
use common::TestDb;
use common::flight::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const INSERT: &str = "INSERT INTO fraiseql.tb_entity_change_log (entity, op, after) \
                      VALUES ('order', 'INSERT', '{}') RETURNING pk";

async fn client(f: &TestFlight) -> FlightClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", f.addr))
        .unwrap()
        .connect()
        .await
        .expect("flight connects");
    let mut c = FlightClient::new(channel);
    c.add_header("authorization", &format!("Bearer {TOKEN}"))
        .unwrap();
    c
}

async fn open(f: &TestFlight, ticket: &Value) -> FlightDataDecoder {
    client(f)
        .await
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .expect("do_get")
        .into_inner()
}

/// The next record batch: its pks and its `app_metadata` as text; `None` at the end.
async fn next_batch(s: &mut FlightDataDecoder) -> Option<(Vec<i64>, String)> {
    while let Some(item) = s.next().await {
        let d = item.expect("stream item");
        if let DecodedPayload::RecordBatch(b) = d.payload {
            let pks = b.column(0).as_primitive::<Int64Type>().values().to_vec();
            let md = String::from_utf8(d.inner.app_metadata.to_vec()).unwrap();
            return Some((pks, md));
        }
    }
    None
}

/// Collects pks until `want` rows came or `wait` passed.
async fn read_pks(s: &mut FlightDataDecoder, want: usize, wait: Duration) -> Vec<i64> {
    let mut pks = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        while pks.len() < want {
            match next_batch(s).await {
                Some((p, _)) => pks.extend(p),
                None => break,
            }
        }
    })
    .await;
    pks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_stream_delivers_a_change_that_commits_after_a_higher_pk() {
    let _held = common::hold_change_log().await;
    let db = TestDb::new().await;
    let f = TestFlight::start_following(&db, config()).await;
    let mut stream = open(&f, &json!({"type": "events", "follow": true})).await;

    // The first transaction takes pk N and holds it open while pk N+1 commits.
    let mut late = db.client().await;
    let tx = late.transaction().await.unwrap();
    let n: i64 = tx.query_one(INSERT, &[]).await.unwrap().get(0);
    let other = db.client().await;
    let n1: i64 = other.query_one(INSERT, &[]).await.unwrap().get(0);
    assert_eq!(n1, n + 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    tx.commit().await.unwrap();

    let mut pks = read_pks(&mut stream, 2, Duration::from_secs(10)).await;
    // Nothing more may come (N exactly once).
    pks.extend(read_pks(&mut stream, 1, Duration::from_millis(800)).await);
    pks.sort_unstable();
    assert_eq!(
        pks,
        vec![n, n1],
        "the stream must deliver both changes, N once"
    );
    f.stop().await;
}

/// The `after` position in a batch's `app_metadata`.
fn after(md: &str) -> String {
    let v: Value = serde_json::from_str(md).unwrap_or_else(|e| panic!("{e}: {md:?}"));
    v["after"]
        .as_str()
        .unwrap_or_else(|| panic!("{md}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_a_resume_position_that_gives_exactly_the_rest() {
    let _log = common::read_change_log().await;
    let db = TestDb::new().await;
    // Transaction A takes pk 1 and pk 3 around B's pk 2: by position A comes first.
    let mut a = db.client().await;
    let tx = a.transaction().await.unwrap();
    tx.execute(INSERT, &[]).await.unwrap();
    db.batch(&INSERT.replace(" RETURNING pk", "")).await;
    tx.execute(INSERT, &[]).await.unwrap();
    tx.commit().await.unwrap();
    for _ in 0..3 {
        db.batch(&INSERT.replace(" RETURNING pk", "")).await;
    }
    common::change_log_settled(&db).await;
    let c = db.client().await;
    let position = |pk: i64| {
        let c = &c;
        async move {
            let txid: String = c
                .query_one(
                    "SELECT txid::text FROM fraiseql.tb_entity_change_log WHERE pk = $1",
                    &[&pk],
                )
                .await
                .unwrap()
                .get(0);
            format!("{txid}:{pk}")
        }
    };
    let two_row_batches = fraiseql::flight::FlightConfig {
        batch_rows: 2,
        ..config()
    };
    let f = TestFlight::start_following(&db, two_row_batches).await;

    // Part of a follow stream: two batches, each with its last row's position.
    let mut s = open(&f, &json!({"type": "events", "follow": true})).await;
    let (first, md1) = next_batch(&mut s).await.expect("first batch");
    let (second, md2) = next_batch(&mut s).await.expect("second batch");
    drop(s);
    assert_eq!(
        [first, second].concat(),
        vec![1, 3, 2, 4],
        "(txid, pk) order"
    );
    assert_eq!(after(&md1), position(3).await);
    assert_eq!(after(&md2), position(4).await);

    // Reconnecting after the second batch gives exactly the rest, then nothing.
    let mut s = open(
        &f,
        &json!({"type": "events", "follow": true, "after": after(&md2)}),
    )
    .await;
    let mut rest = read_pks(&mut s, 2, Duration::from_secs(10)).await;
    rest.extend(read_pks(&mut s, 1, Duration::from_millis(500)).await);
    assert_eq!(rest, vec![5, 6]);
    drop(s);

    // A bounded read from the first batch's position; since_pk still filters by pk.
    let mut s = open(&f, &json!({"type": "events", "after": after(&md1)})).await;
    let mut got = Vec::new();
    let mut last_md = String::new();
    while let Some((pks, md)) = next_batch(&mut s).await {
        got.extend(pks);
        last_md = md;
    }
    assert_eq!(got, vec![2, 4, 5, 6]);
    assert_eq!(after(&last_md), position(6).await);
    let mut s = open(&f, &json!({"type": "events", "since_pk": 2})).await;
    let mut got = Vec::new();
    while let Some((pks, _)) = next_batch(&mut s).await {
        got.extend(pks);
    }
    assert_eq!(got, vec![3, 4, 5, 6]);

    // A position that is not "<txid>:<pk>" is a clear ticket error.
    let e = client(&f)
        .await
        .do_get(Ticket::new(
            json!({"type": "events", "after": "12"}).to_string(),
        ))
        .await
        .expect_err("bad position is rejected")
        .to_string();
    assert!(e.contains("<txid>:<pk>"), "{e}");
    f.stop().await;
}
