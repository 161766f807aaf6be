//! `Engine::check_database`: every view and function the schema names, with `data jsonb`.

use crate::common;

use common::*;

#[tokio::test]
async fn check_reports_views_and_functions() {
    let db = TestDb::new().await;
    let engine = blog_engine();
    let client = db.client().await;

    // Empty database: everything missing, by name.
    let items = engine.check_database(&client).await;
    assert!(items.iter().all(|i| !i.ok), "{items:?}");
    assert!(items.iter().any(|i| i.kind == "view"
        && i.name == "v_user"
        && i.message == "does not exist"
        && i.used_by.contains("query users")));
    assert!(items.iter().any(|i| i.kind == "function"
        && i.name == "fn_create_post"
        && i.used_by == "mutation createPost"));

    // The blog: everything present.
    db.load_blog().await;
    let items = engine.check_database(&client).await;
    assert!(items.iter().all(|i| i.ok), "{items:?}");
    assert_eq!(items.iter().filter(|i| i.kind == "view").count(), 3);
    assert_eq!(items.iter().filter(|i| i.kind == "function").count(), 3);
    let del = items.iter().find(|i| i.name == "fn_delete_post").unwrap();
    assert_eq!(del.message, "ok: (p_id uuid)");

    // A view whose data is json, not jsonb; a view without data.
    db.batch("DROP VIEW v_user CASCADE; CREATE VIEW v_user AS SELECT id, to_json(u) AS data FROM tb_user u; \
              DROP VIEW v_comment; CREATE VIEW v_comment AS SELECT id, body FROM tb_comment;").await;
    let items = engine.check_database(&client).await;
    let user = items.iter().find(|i| i.name == "v_user").unwrap();
    assert!(!user.ok && user.message.contains("not jsonb"), "{user:?}");
    let comment = items.iter().find(|i| i.name == "v_comment").unwrap();
    assert!(
        !comment.ok && comment.message.contains("no `data` column"),
        "{comment:?}"
    );
}

/// `fraiseql check` validates every section the configuration uses, not only the ones
/// `serve` reads: a `[flight]` that `fraiseql flight` would refuse fails the check, by key.
#[tokio::test]
async fn check_fails_on_a_flight_certificate_without_its_key() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.pem");
    std::fs::write(&cert, "not read: the key is missing first").unwrap();
    let key = dir.path().join("server.key");
    std::fs::write(&key, "x").unwrap();
    // `fraiseql check` with a `[flight]` section of these lines; exit code, stdout, stderr.
    let check = |lines: String| {
        let config = dir.path().join("fraiseql.toml");
        std::fs::write(
            &config,
            format!("[flight]\ntokens = [\"t0k3n-for-the-check\"]\n{lines}"),
        )
        .unwrap();
        let out = bin()
            .arg("check")
            .env("FRAISEQL_DATABASE_URL", db.url())
            .env("FRAISEQL_CONFIG", &config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cert_line = format!("tls_cert = {:?}\n", cert.display().to_string());
    let (code, stdout, stderr) = check(cert_line.clone());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAIL  flight") && stdout.contains("flight.tls_key"),
        "{stdout}{stderr}"
    );
    assert!(!stdout.contains("t0k3n-for-the-check") && !stderr.contains("t0k3n-for-the-check"));

    // The same section with its key passes that item (the files are only read at start).
    let key_line = format!("tls_key = {:?}\n", key.display().to_string());
    let (_, stdout, _) = check(cert_line + &key_line);
    assert!(stdout.contains("ok    flight"), "{stdout}");
}

/// A malformed value in an environment variable whose key holds a secret is named by its
/// variable, never printed back (the value may be a real token).
#[test]
fn config_errors_never_echo_a_secret_environment_value() {
    for (var, value) in [
        ("FRAISEQL_FLIGHT_TOKENS", "hunter2-secret-token"),
        ("FRAISEQL_FLIGHT_TOKENS", "[\"hunter2-secret-token\""),
        ("FRAISEQL_FLIGHT_TOKENS", "\"hunter2-secret-token\""),
        ("FRAISEQL_FLIGHT_TOKENS", "[\"hunter2-secret-token\", 3]"),
        (
            "FRAISEQL_DATABASE_URL",
            "postgres://app:hunter2-secret-token@[::1",
        ),
    ] {
        let out = bin().arg("check").env(var, value).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{var}: {stdout}{stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{var} echoed: {stdout}{stderr}"
        );
        assert!(
            stderr.contains(var) || stdout.contains(var) || stdout.contains("database"),
            "{var} named: {stdout}{stderr}"
        );
    }
    // A value that holds no secret is still shown, so the mistake is easy to see.
    let out = bin()
        .arg("check")
        .env("FRAISEQL_DATABASE_POOL_SIZE", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"lots\""), "{stderr}");
}
