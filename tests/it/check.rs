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

/// Each query's `inject_params` is reported with the path its filter takes (the view's
/// column, else the `data` key), and refused when the view can filter neither way.
#[tokio::test]
async fn check_reports_the_path_of_each_injected_parameter() {
    let db = TestDb::new().await;
    let client = db.client().await;
    db.batch(
        "CREATE TABLE tb_note (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id text,
                               title text);
         INSERT INTO tb_note (tenant_id, title) VALUES ('A', 'a1'), ('B', 'b1');
         CREATE TABLE tb_secret (id uuid PRIMARY KEY, note text);
         CREATE VIEW v_secret AS SELECT id, jsonb_build_object('note', note) AS data FROM tb_secret;",
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate_path("tests/fixtures/authz/schema.json")).unwrap(),
    )
    .unwrap();
    // The fixture's Note declares `tenantId` (data key `tenant_id`); a copy without it.
    let mut undeclared = doc.clone();
    undeclared["types"][0]["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "tenantId");
    let engine = |doc: &serde_json::Value| {
        let (schema, _) = fraiseql::schema::compile_str(&doc.to_string(), "schema.json").unwrap();
        fraiseql::graphql::Engine::new(std::sync::Arc::new(schema), Default::default()).unwrap()
    };
    let inject = |items: Vec<fraiseql::graphql::CheckItem>| {
        let mut it: Vec<_> = items.into_iter().filter(|i| i.kind == "inject").collect();
        assert_eq!(it.len(), 1, "{it:?}");
        let i = it.remove(0);
        assert_eq!(
            (i.name.as_str(), i.used_by.as_str()),
            ("v_note.tenant_id", "query notes")
        );
        i
    };
    let view = |select: &str| {
        format!(
            "DROP VIEW IF EXISTS v_note; CREATE VIEW v_note AS SELECT id, {select} FROM tb_note"
        )
    };

    // The view has the column: the filter takes it.
    db.batch(&view(
        "tenant_id, jsonb_build_object('id', id, 'title', title) AS data",
    ))
    .await;
    let i = inject(engine(&doc).check_database(&client).await);
    assert!(
        i.ok && i.message.contains("column `tenant_id` (text)"),
        "{i:?}"
    );

    // No column: the `data` key, declared by the field Note.tenantId.
    db.batch(&view(
        "jsonb_build_object('id', id, 'title', title, 'tenant_id', tenant_id) AS data",
    ))
    .await;
    let i = inject(engine(&doc).check_database(&client).await);
    assert!(
        i.ok && i.message.contains("data ->> 'tenant_id'") && i.message.contains("Note.tenantId"),
        "{i:?}"
    );
    // Undeclared, but the rows hold the key.
    let i = inject(engine(&undeclared).check_database(&client).await);
    assert!(
        i.ok && i.message.contains("data ->> 'tenant_id'")
            && i.message.contains("2 of the first 2"),
        "{i:?}"
    );

    // Neither a column nor a verifiable key: an error saying so.
    db.batch(&view(
        "jsonb_build_object('id', id, 'title', title) AS data",
    ))
    .await;
    let i = inject(engine(&undeclared).check_database(&client).await);
    assert!(!i.ok, "{i:?}");
    assert!(
        i.message.contains("no column `tenant_id`") && i.message.contains("cannot be verified"),
        "{i:?}"
    );
    // Nor a data column at all.
    db.batch(&view("title")).await;
    let i = inject(engine(&doc).check_database(&client).await);
    assert!(!i.ok && i.message.contains("nor a `data` column"), "{i:?}");
}
