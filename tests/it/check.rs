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
