//! The `check` role: validate the configuration and reach every configured service, one
//! line per item. Returns whether everything passed; `main` turns that into the exit code.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::redact::redact_url;

/// One checked item.
#[derive(Debug)]
pub struct Item {
    pub name: String,
    pub result: Result<String, String>,
}

/// Each `[[auth.jwt]]` verifier: its keys load (a JWKS is fetched once).
async fn check_auth(auth: &crate::auth::AuthConfig) -> Vec<Item> {
    use crate::auth::keys::KeyStatus;
    let name = |i: usize, j: &crate::auth::JwtConfig| {
        let source = match (&j.jwks_url, &j.public_key_file) {
            (Some(url), _) => format!("JWKS {url}"),
            (None, Some(p)) => format!("key file {}", p.display()),
            _ => "HMAC secret".to_string(),
        };
        format!("auth.jwt[{i}] {} ({source})", j.algorithms.join(","))
    };
    match crate::auth::Authenticator::new(auth).await {
        Err(e) => vec![Item {
            name: "auth".into(),
            result: Err(e.to_string()),
        }],
        Ok(a) => {
            let problems = a.key_status();
            auth.jwt
                .iter()
                .enumerate()
                .map(|(i, j)| Item {
                    name: name(i, j),
                    result: match problems.iter().find(|(k, _)| *k == i) {
                        None => Ok("keys loaded".into()),
                        Some((_, KeyStatus::Unavailable(e) | KeyStatus::Stale(e))) => {
                            Err(e.clone())
                        }
                        Some((_, KeyStatus::Ready)) => Ok("keys loaded".into()),
                    },
                })
                .collect()
        }
    }
}

/// Runs every check; never fails early, so the user sees all problems at once.
pub async fn run(config: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    let source = config
        .origins
        .file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "defaults and environment".into());
    items.push(Item {
        name: "config".into(),
        result: Ok(format!("valid ({source})")),
    });

    if let Some(auth) = &config.auth {
        items.extend(check_auth(auth).await);
    }

    let db_name = format!("database {}", redact_url(&config.database.url));
    // One pool serves every check below; it is closed before returning.
    let pool = match crate::db::pool(&config.database) {
        Ok(pool) => pool,
        Err(e) => {
            items.push(Item {
                name: db_name,
                result: Err(e.to_string()),
            });
            return items;
        }
    };
    let timeout = Duration::from_millis(config.database.connect_timeout_ms + 1000);
    let result = crate::db::ping(&pool, timeout)
        .await
        .map(|v| format!("PostgreSQL {v}"))
        .map_err(|e| e.to_string());
    let db_ok = result.is_ok();
    items.push(Item {
        name: db_name,
        result,
    });

    let mut engine = None;
    if !config.graphql.schema.is_empty() {
        let path = &config.graphql.schema;
        let name = format!("schema {path}");
        match crate::schema::load(std::path::Path::new(path)) {
            Err(e) => items.push(Item {
                name,
                result: Err(e.to_string()),
            }),
            Ok(schema) => {
                items.push(Item {
                    name: name.clone(),
                    result: Ok(format!(
                        "{} types, {} queries, {} mutations",
                        schema.types.len(),
                        schema.queries.len(),
                        schema.mutations.len()
                    )),
                });
                match crate::graphql::Engine::new(Arc::new(schema), config.graphql_limits()) {
                    Err(e) => items.push(Item {
                        name,
                        result: Err(e.to_string()),
                    }),
                    Ok(e) => engine = Some(e.with_read_tables(config.graphql.read_tables)),
                }
            }
        }
    }

    if config.graphql.documents.allow_list() {
        let path = &config.graphql.documents.trusted_documents;
        items.push(Item {
            name: format!("trusted documents {path}"),
            result: crate::graphql::persisted::Manifest::load(
                std::path::Path::new(path),
                config.graphql.documents.trusted_documents_max_bytes,
            )
            .map(|m| format!("{} documents", m.len()))
            .map_err(|e| e.to_string()),
        });
    }

    if !config.observers.is_empty() {
        let entities = engine
            .as_ref()
            .map(|e| e.schema().types.iter().map(|t| t.name.clone()).collect());
        let result = crate::compose::build_observers(config, pool.clone(), entities, None)
            .map(|_| "conditions, templates, URLs and secrets valid".to_string())
            .map_err(|e| format!("{e:#}"));
        items.push(Item {
            name: format!("observers ({})", config.observers.len()),
            result,
        });
    }

    if config.queue.backend.is_external() {
        items.push(check_queue(config, &pool).await);
    }
    if config.nats.enabled() {
        items.push(check_nats(&config.nats).await);
    }
    if let Some(item) = check_flight(config) {
        items.push(item);
    }

    if let (Some(engine), true) = (&engine, db_ok) {
        items.extend(check_objects(&pool, engine).await);
    }
    pool.close();
    items
}

/// The `[flight]` section as `fraiseql flight` (or `serve --with-flight`) would validate it,
/// when any of its keys is set: a section left at its defaults is not in use (it would fail
/// for want of a token).
fn check_flight(config: &Config) -> Option<Item> {
    let flight = &config.flight;
    let configured = serde_json::to_value(flight).ok()
        != serde_json::to_value(crate::flight::FlightConfig::default()).ok();
    if !configured {
        return None;
    }
    let result = config
        .validate_for(&[crate::config::Role::Flight])
        .map_err(|e| e.to_string())
        .and_then(|()| flight.resolved_tokens().map_err(|e| e.to_string()))
        .map(|tokens| {
            let tls = if flight.tls_enabled() { ", TLS" } else { "" };
            let jwt = if config.auth.is_some() {
                ", JWTs of [auth]"
            } else {
                ""
            };
            format!(
                "listen {}, {} token(s){jwt}{tls}",
                flight.listen,
                tokens.len()
            )
        });
    Some(Item {
        name: "flight".into(),
        result,
    })
}

/// The external queue answers, and how many jobs and dead letters it holds.
async fn check_queue(config: &Config, pool: &deadpool_postgres::Pool) -> Item {
    let queue = &config.queue;
    let name = format!(
        "{} queue {} (prefix {})",
        queue.backend.name(),
        redact_url(&queue.url),
        queue.key_prefix
    );
    // Connecting waits for the backend to come up; `check` must answer promptly instead.
    let limit = Duration::from_millis(queue.connect_timeout_ms + 1000);
    let probe = async {
        let capacity = config.observer_runtime.queue_capacity;
        let q = crate::queue::build(queue, pool, capacity)
            .await
            .map_err(|e| e.to_string())?;
        let depth = q.queue.depth().await.map_err(|e| e.to_string())?;
        let dead = q
            .dead_letters
            .count_dead()
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("{depth} jobs live, {dead} dead letters"))
    };
    let result = match tokio::time::timeout(limit, probe).await {
        Err(_) => Err(format!("unreachable within {} ms", limit.as_millis())),
        Ok(r) => r,
    };
    Item { name, result }
}

/// NATS answers, JetStream has (or accepted) the stream, and how many events it holds.
async fn check_nats(config: &crate::nats::NatsConfig) -> Item {
    let name = format!("nats {} (stream {})", config.redacted_url(), config.stream);
    let limit = Duration::from_millis(config.connect_timeout_ms + config.request_timeout_ms);
    let cancel = tokio_util::sync::CancellationToken::new();
    let probe = async {
        let bus = crate::nats::EventBus::connect(config, &cancel)
            .await
            .map_err(|e| e.to_string())?;
        let state = bus.stream_state().await.map_err(|e| e.to_string())?;
        Ok(format!(
            "JetStream stream holds {} events (subjects {}.>)",
            state.messages, config.subject_prefix
        ))
    };
    let result = match tokio::time::timeout(limit, probe).await {
        Err(_) => Err(format!("unreachable within {} ms", limit.as_millis())),
        Ok(r) => r,
    };
    Item { name, result }
}

/// Every view and function the schema names exists, views with a `data jsonb` column.
async fn check_objects(
    pool: &deadpool_postgres::Pool,
    engine: &crate::graphql::Engine,
) -> Vec<Item> {
    match pool.get().await {
        Err(e) => vec![Item {
            name: "schema objects".into(),
            result: Err(e.to_string()),
        }],
        Ok(client) => engine
            .check_database(&client)
            .await
            .into_iter()
            .map(|c| Item {
                name: format!("{} {} (used by {})", c.kind, c.name, c.used_by),
                result: if c.ok { Ok(c.message) } else { Err(c.message) },
            })
            .collect(),
    }
}

/// Prints the items, one line each; true when all passed.
pub fn print(items: &[Item]) -> bool {
    let mut ok = true;
    for item in items {
        match &item.result {
            Ok(detail) => println!("ok    {}: {detail}", item.name),
            Err(e) => {
                ok = false;
                println!("FAIL  {}: {e}", item.name);
            }
        }
    }
    ok
}
