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
    let db = TestDb::new().await;
    let f = TestFlight::start(
        &db,
        fraiseql::flight::FlightConfig {
            follow_poll_ms: 100,
            ..config()
        },
    )
    .await;
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
    assert_eq!(pks, vec![n, n1], "the stream must deliver both changes, N once");
    f.stop().await;
}
