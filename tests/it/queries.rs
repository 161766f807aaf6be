//! Query features against real PostgreSQL, with expected results computed from the seed
//! rows the test inserted: selection, key order, aliases, __typename, fragments, @skip and
//! @include, variables, merged response keys, id and field lookups, ordering, pagination,
//! defaults and limits, nested objects and lists, scalars, several root fields.

use crate::common;

use common::*;
use serde_json::{Value, json};

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn selection_order_aliases_typename_and_nesting() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();

    // Raw body: keys in query order, aliases, __typename, no re-serialization.
    let r = post(
        &engine,
        pool,
        "{ users(limit: 1, orderBy: [{identifier: ASC}]) { zName: name id kind: __typename email } }",
        json!({}),
    )
    .await;
    let text = r.text();
    let u = &seed.users[0];
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    assert!(pos("\"zName\"") < pos("\"id\""));
    assert!(pos("\"id\"") < pos("\"kind\""));
    assert!(pos("\"kind\"") < pos("\"email\""));
    assert_eq!(
        r.json(),
        json!({"data": {"users": [{"zName": u.name, "id": u.id.to_string(), "kind": "User", "email": u.email}]}})
    );

    // Nested objects and lists, exactly as seeded.
    let d = data(
        &engine,
        pool,
        "{ users(limit: 50, orderBy: [{identifier: ASC}]) { id identifier role score metadata createdAt posts { id title published views rating tags createdAt author { identifier } comments { id body author { name } } } } }",
        json!({}),
    )
    .await;
    let users = d["users"].as_array().unwrap();
    assert_eq!(users.len(), 50);
    for (got, u) in users.iter().zip(&seed.users) {
        assert_eq!(got["id"], json!(u.id.to_string()));
        assert_eq!(got["identifier"], json!(u.identifier));
        assert_eq!(got["role"], json!(Seed::role_name(u.role)));
        assert_eq!(
            got["score"],
            json!(u.score),
            "BigInt beyond 32 bits stays exact"
        );
        assert_eq!(got["metadata"], u.metadata.clone().unwrap_or(Value::Null));
        assert_eq!(ts(&got["createdAt"]), u.created_at);
        let posts = got["posts"].as_array().unwrap();
        assert_eq!(posts.len(), u.posts.len());
        for (gp, &pi) in posts.iter().zip(&u.posts) {
            let p = &seed.posts[pi];
            assert_eq!(gp["id"], json!(p.id.to_string()));
            assert_eq!(gp["title"], json!(p.title));
            assert_eq!(gp["published"], json!(p.published));
            assert_eq!(gp["views"], json!(p.views));
            assert_eq!(gp["rating"].as_f64(), p.rating);
            assert_eq!(gp["tags"], json!(p.tags));
            assert_eq!(ts(&gp["createdAt"]), p.created_at);
            assert_eq!(gp["author"]["identifier"], json!(u.identifier));
            let comments = gp["comments"].as_array().unwrap();
            assert_eq!(comments.len(), p.comments.len());
            for (gc, &ci) in comments.iter().zip(&p.comments) {
                let c = &seed.comments[ci];
                assert_eq!(gc["id"], json!(c.id.to_string()));
                assert_eq!(gc["body"], json!(c.body));
                assert_eq!(gc["author"]["name"], json!(seed.users[c.author].name));
            }
        }
    }

    // Timestamps are RFC 3339.
    let s = d["users"][0]["createdAt"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(s).is_ok(), "{s}");
}

#[tokio::test]
async fn fragments_directives_variables_and_merging() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    let u = &seed.users[4];

    let q = r#"
        query One($id: UUID!, $withEmail: Boolean!, $skipName: Boolean!) {
          user(id: $id) {
            ...Basic
            ... on User { role }
            ... @include(if: $withEmail) { email }
            name @skip(if: $skipName)
            posts { title }
            posts { views }
          }
        }
        fragment Basic on User { id identifier }
    "#;
    let d = data(
        &engine,
        pool,
        q,
        json!({"id": u.id, "withEmail": true, "skipName": true}),
    )
    .await;
    let got = &d["user"];
    assert_eq!(got["id"], json!(u.id.to_string()));
    assert_eq!(got["identifier"], json!(u.identifier));
    assert_eq!(got["role"], json!(Seed::role_name(u.role)));
    assert_eq!(got["email"], json!(u.email));
    assert!(got.get("name").is_none(), "@skip applied");
    let posts = got["posts"].as_array().unwrap();
    for (gp, &pi) in posts.iter().zip(&u.posts) {
        assert_eq!(gp["title"], json!(seed.posts[pi].title));
        assert_eq!(
            gp["views"],
            json!(seed.posts[pi].views),
            "merged selections"
        );
    }
    let d = data(
        &engine,
        pool,
        q,
        json!({"id": u.id, "withEmail": false, "skipName": false}),
    )
    .await;
    assert!(d["user"].get("email").is_none(), "@include(if: false)");
    assert_eq!(d["user"]["name"], json!(u.name));

    // A root field reached directly and through a fragment: one merged result.
    let d = data(
        &engine,
        pool,
        "{ users(limit: 2) { id } ...F } fragment F on Query { users(limit: 2) { name } }",
        json!({}),
    )
    .await;
    let users = d["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert!(
        users
            .iter()
            .all(|x| x.get("id").is_some() && x.get("name").is_some()),
        "{d}"
    );

    // Several root fields (and __typename at the root) in one request.
    let d = data(
        &engine,
        pool,
        "{ __typename a: user(id: \"00000000-0000-4000-8000-000000000001\") { name } b: post(id: \"00000000-0000-4000-9000-000000000002\") { title } c: comments(limit: 1, orderBy: [{createdAt: DESC}]) { body } }",
        json!({}),
    )
    .await;
    assert_eq!(d["__typename"], json!("Query"));
    assert_eq!(d["a"]["name"], json!(seed.users[0].name));
    assert_eq!(d["b"]["title"], json!(seed.posts[1].title));
    assert_eq!(d["c"][0]["body"], json!(seed.comments[299].body));
}

#[tokio::test]
async fn lookups_by_id_and_by_field() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();
    for u in [&seed.users[0], &seed.users[17], &seed.users[49]] {
        let d = data(
            &engine,
            pool,
            "query($id: UUID!) { user(id: $id) { id name } }",
            json!({"id": u.id}),
        )
        .await;
        assert_eq!(d["user"], json!({"id": u.id.to_string(), "name": u.name}));
        let d = data(
            &engine,
            pool,
            "query($i: String!) { userByIdentifier(identifier: $i) { id } }",
            json!({"i": u.identifier}),
        )
        .await;
        assert_eq!(d["userByIdentifier"]["id"], json!(u.id.to_string()));
    }
    let d = data(
        &engine,
        pool,
        "{ user(id: \"00000000-0000-4000-8000-0000000000ff\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(d["user"], Value::Null, "not found is null");
    let p = &seed.posts[41];
    let d = data(
        &engine,
        pool,
        &format!("{{ post(id: \"{}\") {{ title author {{ name }} }} }}", p.id),
        json!({}),
    )
    .await;
    assert_eq!(d["post"]["title"], json!(p.title));
    assert_eq!(
        d["post"]["author"]["name"],
        json!(seed.users[p.author].name)
    );

    // An invalid UUID: a field error, the field is null, other fields still answer.
    let v = gql(
        &engine,
        pool,
        "{ user(id: \"not-a-uuid\") { id } users(limit: 1) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["user"], Value::Null);
    assert_eq!(v["data"]["users"].as_array().unwrap().len(), 1);
    let e = &v["errors"][0];
    assert_eq!(e["extensions"]["code"], json!("BAD_USER_INPUT"));
    assert_eq!(e["path"], json!(["user"]));
    assert!(e["message"].as_str().unwrap().contains("not a UUID"));
    assert_eq!(e["locations"], json!([{"line": 1, "column": 3}]));
}

#[tokio::test]
async fn ordering_and_pagination() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let engine = blog_engine();
    let pool = db.pool();

    // One field, both directions.
    let mut by_views: Vec<&common::SeedPost> = seed.posts.iter().collect();
    by_views.sort_by_key(|p| (p.views, p.p));
    let d = data(
        &engine,
        pool,
        "{ posts(limit: 1000, orderBy: [{views: ASC}, {createdAt: ASC}]) { id views } }",
        json!({}),
    )
    .await;
    let expect: Vec<String> = by_views.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids(&d["posts"]), expect);
    let d = data(
        &engine,
        pool,
        "{ posts(limit: 1000, orderBy: {createdAt: DESC}) { id } }",
        json!({}),
    )
    .await;
    let expect: Vec<String> = seed.posts.iter().rev().map(|p| p.id.to_string()).collect();
    assert_eq!(
        ids(&d["posts"]),
        expect,
        "a single object is coerced to a list"
    );

    // Several fields: published DESC, then views DESC.
    let mut multi: Vec<&common::SeedPost> = seed.posts.iter().collect();
    multi.sort_by(|a, b| {
        b.published
            .cmp(&a.published)
            .then(b.views.cmp(&a.views))
            .then(a.p.cmp(&b.p))
    });
    let d = data(
        &engine,
        pool,
        "{ posts(limit: 1000, orderBy: [{published: DESC}, {views: DESC}, {createdAt: ASC}]) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        ids(&d["posts"]),
        multi.iter().map(|p| p.id.to_string()).collect::<Vec<_>>()
    );

    // Nullable float: NULLs last ascending (PostgreSQL default), first descending.
    let d = data(
        &engine,
        pool,
        "{ posts(limit: 1000, orderBy: [{rating: DESC}, {createdAt: ASC}]) { id rating } }",
        json!({}),
    )
    .await;
    let mut by_rating: Vec<&common::SeedPost> = seed.posts.iter().collect();
    by_rating.sort_by(|a, b| match (a.rating, b.rating) {
        (None, None) => a.p.cmp(&b.p),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.partial_cmp(&x).unwrap().then(a.p.cmp(&b.p)),
    });
    assert_eq!(
        ids(&d["posts"]),
        by_rating
            .iter()
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>()
    );

    // Enum ordering sorts by the stored value, then name.
    let d = data(
        &engine,
        pool,
        "{ users(limit: 100, orderBy: [{role: ASC}, {name: DESC}]) { id } }",
        json!({}),
    )
    .await;
    let mut by_role: Vec<&common::SeedUser> = seed.users.iter().collect();
    by_role.sort_by(|a, b| a.role.cmp(b.role).then(b.name.cmp(&a.name)));
    assert_eq!(
        ids(&d["users"]),
        by_role.iter().map(|u| u.id.to_string()).collect::<Vec<_>>()
    );

    // Pagination: pages of 7 cover everything once, in order.
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let d = data(
            &engine,
            pool,
            "query($o: Int, $l: Int!) { users(limit: $l, offset: $o, orderBy: [{identifier: ASC}]) { id } }",
            json!({"o": offset, "l": 7}),
        )
        .await;
        let page = ids(&d["users"]);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        all.extend(page);
        offset += 7;
    }
    assert_eq!(
        all,
        seed.users
            .iter()
            .map(|u| u.id.to_string())
            .collect::<Vec<_>>()
    );

    // Defaults: users declares limit = 10; posts uses the configured default (100).
    let d = data(&engine, pool, "{ users { id } posts { id } }", json!({})).await;
    assert_eq!(d["users"].as_array().unwrap().len(), 10);
    assert_eq!(d["posts"].as_array().unwrap().len(), 100);
    let small = blog_engine_with(fraiseql::graphql::Limits {
        default_limit: 5,
        max_limit: 20,
        ..Default::default()
    });
    let d = data(&small, pool, "{ posts { id } }", json!({})).await;
    assert_eq!(d["posts"].as_array().unwrap().len(), 5);
    let v = gql(&small, pool, "{ posts(limit: 21) { id } }", json!({})).await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("LIMIT_EXCEEDED")
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 20")
    );
    let v = gql(
        &small,
        pool,
        "{ posts(limit: 2, offset: -1) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("BAD_USER_INPUT")
    );
    let d = data(&small, pool, "{ posts(limit: 0) { id } }", json!({})).await;
    assert_eq!(d["posts"], json!([]));
    let d = data(&engine, pool, "{ posts(offset: 1000) { id } }", json!({})).await;
    assert_eq!(d["posts"], json!([]));
}

#[tokio::test]
async fn null_propagation_int_range_and_enum_values_from_the_view() {
    let db = TestDb::new().await;
    db.batch(
        r#"
        CREATE VIEW v_thing AS
        SELECT v.id, v.data FROM (VALUES
          ('00000000-0000-4000-8000-000000000001'::uuid, '{"id":"1","name":"ok","size":1,"kind":"small","at":"2024-05-06T07:08:09","parts":[{"label":"a"},{"label":"b"}]}'::jsonb),
          ('00000000-0000-4000-8000-000000000002'::uuid, '{"id":"2","name":null,"size":2,"kind":"small","parts":[],"labels":["a",null]}'::jsonb),
          ('00000000-0000-4000-8000-000000000003'::uuid, '{"id":"3","name":"big","size":3000000000,"kind":"small","parts":[]}'::jsonb),
          ('00000000-0000-4000-8000-000000000004'::uuid, '{"id":"4","name":"odd","size":4,"kind":"huge","parts":[]}'::jsonb),
          ('00000000-0000-4000-8000-000000000005'::uuid, '{"id":"5","name":"part","size":5,"kind":"small","parts":[{"label":"x"},{"label":null}]}'::jsonb)
        ) AS v(id, data);
        "#,
    )
    .await;
    let schema = serde_json::json!({
        "types": [
            {"name": "Part", "fields": [{"name": "label", "type": "String", "nullable": false}]},
            {"name": "Thing", "sql_source": "v_thing", "fields": [
                {"name": "id", "type": "ID", "nullable": false},
                {"name": "name", "type": "String", "nullable": false},
                {"name": "size", "type": "Int", "nullable": true},
                {"name": "kind", "type": "Kind", "nullable": true},
                {"name": "at", "type": "DateTime", "nullable": true},
                {"name": "labels", "type": "[String!]", "nullable": true},
                {"name": "parts", "type": "[Part!]", "nullable": true}
            ]}
        ],
        "enums": [{"name": "Kind", "values": [{"name": "SMALL", "value": "small"}]}],
        "queries": [
            {"name": "things", "return_type": "Thing", "returns_list": true, "nullable": false, "arguments": [], "sql_source": "v_thing", "auto_params": {"where": true, "order_by": true, "limit": true, "offset": true}},
            {"name": "strict", "return_type": "Thing", "returns_list": true, "nullable": true, "arguments": [], "sql_source": "v_thing", "auto_params": {"order_by": true}}
        ]
    });
    let (compiled, _) = fraiseql::schema::compile_str(&schema.to_string(), "things.json").unwrap();
    let engine =
        fraiseql::graphql::Engine::new(std::sync::Arc::new(compiled), Default::default()).unwrap();
    let pool = db.pool();

    // Clean rows: no errors.
    let d = data(
        &engine,
        pool,
        "{ things(where: {id: {eq: \"1\"}}) { id name size kind parts { label } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        d,
        json!({"things": [{"id": "1", "name": "ok", "size": 1, "kind": "SMALL", "parts": [{"label": "a"}, {"label": "b"}]}]})
    );

    // A timestamp stored without an offset comes out as RFC 3339 (session time zone, UTC here).
    let d = data(
        &engine,
        pool,
        "{ things(where: {id: {in: [\"1\", \"2\"]}}, orderBy: [{id: ASC}]) { at } }",
        json!({}),
    )
    .await;
    assert_eq!(d["things"][1]["at"], Value::Null);
    let at = d["things"][0]["at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    assert_eq!(
        ts(&d["things"][0]["at"]).to_rfc3339(),
        "2024-05-06T07:08:09+00:00"
    );

    // A null in a non-null field inside a non-null list item: the error names the path with
    // the list index and the null propagates up to the nullable `strict` root field.
    let v = gql(
        &engine,
        pool,
        "{ strict(orderBy: [{id: ASC}]) { id name } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["strict"], Value::Null);
    assert_eq!(v["errors"][0]["path"], json!(["strict", 1, "name"]));
    assert_eq!(
        v["errors"][0]["message"],
        json!("Cannot return null for non-nullable field Thing.name.")
    );

    // The root field `things` is non-null: data becomes null.
    let v = gql(
        &engine,
        pool,
        "{ things(orderBy: [{id: ASC}]) { id name } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"], Value::Null);
    assert_eq!(v["errors"][0]["path"], json!(["things", 1, "name"]));

    // Int out of range: error, the nullable field becomes null, the rest stays.
    let v = gql(
        &engine,
        pool,
        "{ things(where: {id: {in: [\"1\", \"3\"]}}, orderBy: [{id: ASC}]) { id size } }",
        json!({}),
    )
    .await;
    assert_eq!(
        v["data"]["things"],
        json!([{"id": "1", "size": 1}, {"id": "3", "size": null}])
    );
    assert_eq!(v["errors"][0]["path"], json!(["things", 1, "size"]));
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("32-bit")
    );

    // A stored enum value the schema does not know.
    let v = gql(
        &engine,
        pool,
        "{ things(where: {id: {eq: \"4\"}}) { kind } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["things"], json!([{"kind": null}]));
    assert_eq!(v["errors"][0]["path"], json!(["things", 0, "kind"]));

    // A null inside a list of non-null strings nulls the (nullable) list.
    let v = gql(
        &engine,
        pool,
        "{ things(where: {id: {in: [\"1\", \"2\"]}}, orderBy: [{id: ASC}]) { labels } }",
        json!({}),
    )
    .await;
    assert_eq!(
        v["data"]["things"],
        json!([{"labels": null}, {"labels": null}])
    );
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["errors"][0]["path"], json!(["things", 1, "labels"]));

    // Nested list: a null label inside parts[1] nulls the non-null item, hence the
    // nullable list.
    let v = gql(
        &engine,
        pool,
        "{ things(where: {id: {eq: \"5\"}}) { id parts { label } } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["things"], json!([{"id": "5", "parts": null}]));
    assert_eq!(
        v["errors"][0]["path"],
        json!(["things", 0, "parts", 1, "label"])
    );
}

#[tokio::test]
async fn wide_objects_keep_key_order() {
    // json_build_object takes at most 100 arguments: 120 selected keys are chunked and
    // spliced without losing the query's order.
    let db = TestDb::new().await;
    let keys: Vec<String> = (0..120).map(|i| format!("f{i}")).collect();
    // jsonb_build_object has the same 100-argument limit: build the view's data in chunks.
    let chunks: Vec<String> = keys
        .chunks(40)
        .enumerate()
        .map(|(c, ks)| {
            let pairs: Vec<String> = ks
                .iter()
                .enumerate()
                .map(|(i, k)| format!("'{k}', {}", c * 40 + i))
                .collect();
            format!("jsonb_build_object({})", pairs.join(", "))
        })
        .collect();
    db.batch(&format!(
        "CREATE VIEW v_wide AS SELECT '00000000-0000-4000-8000-000000000001'::uuid AS id, {} AS data",
        chunks.join(" || ")
    ))
    .await;
    let fields: Vec<Value> = keys
        .iter()
        .map(|k| json!({"name": k, "type": "Int", "nullable": false}))
        .collect();
    let schema = json!({
        "types": [{"name": "Wide", "sql_source": "v_wide", "fields": fields}],
        "queries": [{"name": "wide", "return_type": "Wide", "returns_list": true, "nullable": false, "arguments": [], "sql_source": "v_wide"}]
    });
    let (compiled, _) = fraiseql::schema::compile_str(&schema.to_string(), "wide.json").unwrap();
    let limits = fraiseql::graphql::Limits {
        max_aliases: 500,
        ..Default::default()
    };
    let engine = fraiseql::graphql::Engine::new(std::sync::Arc::new(compiled), limits).unwrap();
    // Reverse order, with aliases and __typename in the middle.
    let mut sel: Vec<String> = keys.iter().rev().map(|k| format!("a_{k}: {k}")).collect();
    sel.insert(60, "__typename".into());
    let r = post(
        &engine,
        db.pool(),
        &format!("{{ wide {{ {} }} }}", sel.join(" ")),
        json!({}),
    )
    .await;
    let text = r.text();
    let mut last = 0;
    for k in keys.iter().rev() {
        let p = text
            .find(&format!("\"a_{k}\""))
            .unwrap_or_else(|| panic!("{k} missing: {text}"));
        assert!(p > last, "{k} out of order");
        last = p;
    }
    let v = r.json();
    assert_eq!(v["data"]["wide"][0]["a_f119"], json!(119));
    assert_eq!(v["data"]["wide"][0]["__typename"], json!("Wide"));
    assert_eq!(v["data"]["wide"][0].as_object().unwrap().len(), 121);
}

#[tokio::test]
async fn seed_sql_matches_the_rust_seed() {
    // examples/blog/seed.sql (the demo data) and Seed::blog (what the tests insert) are the
    // same rows.
    let a = TestDb::new().await;
    a.load_blog().await;
    let b = TestDb::new().await;
    b.batch(BLOG_SCHEMA_SQL).await;
    b.run_file("examples/blog/seed.sql").await;
    let q = "SELECT json_agg(data ORDER BY id)::text FROM v_user";
    let da: String = a.client().await.query_one(q, &[]).await.unwrap().get(0);
    let db_: String = b.client().await.query_one(q, &[]).await.unwrap().get(0);
    assert_eq!(
        serde_json::from_str::<Value>(&da).unwrap(),
        serde_json::from_str::<Value>(&db_).unwrap()
    );
}
