//! Rate limits over HTTP against real servers: a client over its budget gets 429 with
//! `Retry-After`, `RateLimit`/`RateLimit-Policy` and `RATE_LIMITED` while nothing runs;
//! other clients keep their own budgets; `X-Forwarded-For` is believed only from trusted
//! proxies; mutations have a budget of their own; two instances share one budget in the
//! real Redis; and with Redis cut off, the configured fail mode holds (and `/readyz` says so).

use std::time::{Duration, Instant};

use crate::common;

use common::*;
use fraiseql::ratelimit::config::{OnStoreError, RateLimitConfig, Rule, Store};
use serde_json::{Value, json};

const QUERY: &str = "{ users(limit: 1) { identifier } }";

fn rule(requests_per_minute: u32, burst: u32) -> Option<Rule> {
    Some(Rule {
        requests_per_minute,
        burst: Some(burst),
    })
}

fn blog_config(db: &TestDb, rl: RateLimitConfig) -> fraiseql::config::Config {
    let mut config = db.blog_config();
    config.rate_limit = Some(rl);
    config
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn ask(url: &str, query: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = http()
        .post(url)
        .header("content-type", "application/json")
        .body(json!({ "query": query }).to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A key prefix no other test uses, so budgets in the shared Redis never collide.
fn prefix(db: &TestDb) -> String {
    format!("fqtest:rl:{}:", db.name())
}

#[tokio::test]
async fn over_its_budget_a_client_gets_429_and_others_are_unaffected() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let server = TestServer::start(blog_config(
        &db,
        RateLimitConfig {
            client: rule(60, 5),
            trusted_proxies: Vec::new(),
            ..Default::default()
        },
    ))
    .await;
    let url = server.url("/graphql");

    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(ask(&url, QUERY, &[]).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let ok = &answers[0];
    assert!(ok.body["data"]["users"].is_array(), "{}", ok.body);
    assert_eq!(header(ok, "ratelimit-policy"), "\"client\";q=60;w=60");
    assert_eq!(header(ok, "ratelimit"), "\"client\";r=4;t=1");
    let refused = &answers[5];
    assert_eq!(
        refused.body["errors"][0]["extensions"]["code"],
        json!("RATE_LIMITED"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.get("data").is_none(),
        "nothing ran: {}",
        refused.body
    );
    let retry: u64 = header(refused, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert!(
        header(refused, "ratelimit").contains("r=0"),
        "{:?}",
        refused.headers
    );

    // Spoofing X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = ask(&url, QUERY, &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(spoofed.status, 429);

    // After one request's worth of time, one more is allowed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask(&url, QUERY, &[]).await.status, 200);
    assert_eq!(ask(&url, QUERY, &[]).await.status, 429);
    server.stop().await;

    // Behind a trusted proxy, each forwarded client has its own budget.
    let server = TestServer::start(blog_config(
        &db,
        RateLimitConfig {
            client: rule(60, 2),
            trusted_proxies: vec!["127.0.0.1/32".into()],
            ..Default::default()
        },
    ))
    .await;
    let url = server.url("/graphql");
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    let mut seen = Vec::new();
    for h in [&a, &a, &a, &b, &b, &b] {
        seen.push(ask(&url, QUERY, h).await.status);
    }
    assert_eq!(seen, [200, 200, 429, 200, 200, 429]);
    server.stop().await;
}

#[tokio::test]
async fn mutations_have_their_own_budget_and_a_refused_one_changes_nothing() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let server = TestServer::start(blog_config(
        &db,
        RateLimitConfig {
            client: rule(6000, 100),
            mutations: rule(60, 2),
            ..Default::default()
        },
    ))
    .await;
    let url = server.url("/graphql");
    let author = &seed.users[0].id;
    let create = |n: usize| {
        format!(
            "mutation {{ createPost(input: {{authorId: \"{author}\", title: \"rl {n}\", body: \"b\"}}) {{ title }} }}"
        )
    };
    let count = || async {
        let c: i64 = db
            .client()
            .await
            .query_one("SELECT count(*) FROM tb_post WHERE title LIKE 'rl %'", &[])
            .await
            .unwrap()
            .get(0);
        c
    };
    let mut statuses = Vec::new();
    for n in 0..4 {
        statuses.push(ask(&url, &create(n), &[]).await.status);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(count().await, 2, "refused mutations ran nothing");
    // Queries still have their budget.
    let q = ask(&url, QUERY, &[]).await;
    assert_eq!(q.status, 200, "{}", q.body);
    let m = ask(&url, &create(9), &[]).await;
    assert_eq!(
        m.body["errors"][0]["extensions"]["code"],
        json!("RATE_LIMITED")
    );
    assert!(header(&m, "ratelimit-policy").contains("\"mutations\";q=60;w=60"));
    let metrics = get(&server.url("/metrics")).await.1;
    let limited = metrics
        .lines()
        .find(|l| {
            l.starts_with("fraiseql_rate_limit_decisions_total")
                && l.contains("rule=\"mutations\"")
                && l.contains("outcome=\"limited\"")
        })
        .unwrap_or_default()
        .to_owned();
    assert!(limited.ends_with(" 3"), "{limited}");
    server.stop().await;
}

#[tokio::test]
async fn two_instances_share_one_redis_budget_and_the_fail_mode_holds_when_it_is_gone() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let redis = Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let rl = |on_store_error| RateLimitConfig {
        store: Store::Redis,
        redis_url: format!("redis://{}/", redis.addr),
        key_prefix: prefix(&db),
        on_store_error,
        client: rule(60, 4),
        ..Default::default()
    };
    let a = TestServer::start(blog_config(&db, rl(OnStoreError::Allow))).await;
    let b = TestServer::start(blog_config(&db, rl(OnStoreError::Refuse))).await;
    let (ua, ub) = (a.url("/graphql"), b.url("/graphql"));
    let mut seen = Vec::new();
    for url in [&ua, &ub, &ua, &ub, &ua, &ub] {
        seen.push(ask(url, QUERY, &[]).await.status);
    }
    assert_eq!(
        seen,
        [200, 200, 200, 200, 429, 429],
        "one budget of 4 across both"
    );
    assert_eq!(get(&a.url("/readyz")).await.0, 200);

    // Redis gone: A serves unlimited, B refuses; /readyz says which.
    redis.down();
    for _ in 0..6 {
        let r = ask(&ua, QUERY, &[]).await;
        assert_eq!(r.status, 200, "fail open: {}", r.body);
    }
    let r = ask(&ub, QUERY, &[]).await;
    assert_eq!(r.status, 503, "fail closed: {}", r.body);
    assert_eq!(
        r.body["errors"][0]["extensions"]["code"],
        json!("SERVICE_UNAVAILABLE")
    );
    assert!(r.body.get("data").is_none());
    let (status, body) = get(&a.url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("served unlimited"), "{body}");
    let (status, body) = get(&b.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rate_limit"), "{body}");
    let metrics = get(&a.url("/metrics")).await.1;
    assert!(
        metrics.contains("fraiseql_rate_limit_store_up 0"),
        "store_up"
    );

    // Back: the shared budget applies again.
    redis.up();
    assert!(
        eventually(Duration::from_secs(10), || async {
            ask(&ub, QUERY, &[]).await.status != 503
        })
        .await
    );
    a.stop().await;
    b.stop().await;
}

/// The measure: one client spending as fast as it can on two instances for 30 s
/// gets within ±10 % of what the shared limit allows, and another client keeps its budget.
#[tokio::test]
async fn a_shared_limit_holds_its_rate_over_thirty_seconds_on_two_instances() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let rl = RateLimitConfig {
        store: Store::Redis,
        redis_url: "redis://127.0.0.1:6379/".into(),
        key_prefix: prefix(&db),
        client: rule(240, 10),
        trusted_proxies: vec!["127.0.0.1/32".into()],
        ..Default::default()
    };
    let a = TestServer::start(blog_config(&db, rl.clone())).await;
    let b = TestServer::start(blog_config(&db, rl)).await;
    let urls = [a.url("/graphql"), b.url("/graphql")];
    let abusive = [("x-forwarded-for", "203.0.113.66")];
    let polite = [("x-forwarded-for", "203.0.113.7")];
    let window = Duration::from_secs(30);
    let started = Instant::now();
    let mut flood = Vec::new();
    for worker in 0..4 {
        let url = urls[worker % 2].clone();
        flood.push(tokio::spawn(async move {
            let (mut allowed, mut refused) = (0u32, 0u32);
            while started.elapsed() < window {
                match ask(&url, QUERY, &abusive).await.status {
                    200 => allowed += 1,
                    429 => refused += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (allowed, refused)
        }));
    }
    // The polite client asks once a second on alternate instances: never refused.
    let mut polite_statuses = Vec::new();
    while started.elapsed() < window {
        let url = &urls[polite_statuses.len() % 2];
        polite_statuses.push(ask(url, QUERY, &polite).await.status);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (mut allowed, mut refused) = (0, 0);
    for f in flood {
        let (a, r) = f.await.unwrap();
        allowed += a;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A full budget (the burst) plus the sustained rate over the window.
    let expected = 10.0 + 240.0 / 60.0 * elapsed;
    eprintln!(
        "shared limit over {elapsed:.1} s: {allowed} allowed, {refused} refused, expected {expected:.0}"
    );
    assert!(refused > allowed, "the client did go over its budget");
    assert!(
        (f64::from(allowed) - expected).abs() <= expected * 0.10,
        "{allowed} allowed, expected {expected:.0} ± 10 %"
    );
    assert!(
        polite_statuses.iter().all(|s| *s == 200),
        "{polite_statuses:?}"
    );
    a.stop().await;
    b.stop().await;
}
