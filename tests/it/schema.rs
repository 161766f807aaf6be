//! The compiler and loader: the SDK export as-is, generated inputs, the compiled file's
//! round trip, warnings for unknown keys and errors naming file, type, field and query.

use crate::common;

use std::sync::Arc;

use common::crate_path;
use fraiseql::graphql::{Engine, Limits};
use fraiseql::schema::{
    self, ArgRole, COMPILED_SCHEMA_VERSION, NamedKind, ScalarKind, SchemaError, WhereTarget,
    compile_file, compile_str, load, to_compiled_json,
};
use serde_json::{Value, json};

fn sdk_json() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(crate_path("tests/fixtures/sdk-blog.schema.json")).unwrap(),
    )
    .unwrap()
}

fn compile_value(v: &Value) -> Result<(schema::CompiledSchema, Vec<schema::Warning>), SchemaError> {
    compile_str(&v.to_string(), "schema.json")
}

fn err_text(v: &Value) -> String {
    compile_value(v).expect_err("must fail").to_string()
}

#[test]
fn sdk_export_compiles_as_is() {
    let (s, warnings) = compile_file(&crate_path("tests/fixtures/sdk-blog.schema.json")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.version, COMPILED_SCHEMA_VERSION);
    let post = s.object("Post").unwrap();
    assert_eq!(post.sql_source.as_deref(), Some("v_post"));
    let created = post.field("createdAt").unwrap();
    assert_eq!(created.key, "created_at");
    assert_eq!(created.ty.kind, NamedKind::Scalar(ScalarKind::DateTime));
    let comments = post.field("comments").unwrap();
    assert!(comments.ty.list && !comments.ty.nullable && !comments.ty.item_nullable);
    assert!(post.field("rating").unwrap().ty.nullable);

    let users = s.query("users").unwrap();
    assert!(users.returns_list && !users.nullable);
    assert_eq!(users.view, "v_user");
    let roles: Vec<(String, ArgRole)> = users
        .arguments
        .iter()
        .map(|a| (a.arg.name.clone(), a.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("limit".into(), ArgRole::Limit),
            ("where".into(), ArgRole::Where),
            ("orderBy".into(), ArgRole::OrderBy),
            ("offset".into(), ArgRole::Offset),
        ]
    );
    assert_eq!(users.arguments[0].arg.default, Some(json!(10)));
    assert_eq!(s.query("user").unwrap().arguments[0].role, ArgRole::Id);

    let w = s.where_input("UserWhereInput").unwrap();
    let role = w.fields.iter().find(|f| f.name == "role").unwrap();
    assert_eq!(
        role.target,
        WhereTarget::Filter {
            filter: "RoleFilter".into()
        }
    );
    let posts = w.fields.iter().find(|f| f.name == "posts").unwrap();
    assert_eq!(
        posts.target,
        WhereTarget::List {
            where_input: "PostWhereInput".into()
        }
    );
    assert!(s.filter("StringFilter").unwrap().operators.len() >= 17);
    let order = s.order_input("PostOrderBy").unwrap();
    assert!(
        order
            .fields
            .iter()
            .any(|f| f.name == "createdAt" && f.key == "created_at")
    );
    assert!(!order.fields.iter().any(|f| f.name == "comments"));
    assert_eq!(s.enum_type("Role").unwrap().stored("ADMIN"), Some("admin"));

    let m = s.mutation("createPost").unwrap();
    assert_eq!(m.function, "fn_create_post");
    assert_eq!(m.operation.change_op(), "INSERT");
    assert_eq!(
        s.mutation("deletePost").unwrap().operation.change_op(),
        "DELETE"
    );
    let input = s.input_type("CreatePostInput").unwrap();
    assert_eq!(input.fields[0].key, "author_id");

    // The runtime schema builds from it.
    let engine = Engine::new(Arc::new(s), Limits::default()).unwrap();
    let sdl = engine.sdl();
    assert!(sdl.contains("users(limit: Int! = 10, where: UserWhereInput, orderBy: [UserOrderBy!], offset: Int): [User!]!"), "{sdl}");
    assert!(
        sdl.contains("createPost(input: CreatePostInput!): Post!"),
        "{sdl}"
    );
}

#[test]
fn compiled_file_round_trips_and_loads() {
    let (s, _) = compile_file(&crate_path("tests/fixtures/sdk-blog.schema.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.compiled.json");
    std::fs::write(&path, to_compiled_json(&s)).unwrap();
    let loaded = load(&path).unwrap();
    assert_eq!(loaded, s);
    // The authoring file loads too (compiled in memory).
    let direct = load(&crate_path("tests/fixtures/sdk-blog.schema.json")).unwrap();
    assert_eq!(direct, s);
    // A future version is refused with a clear message.
    let mut v: Value = serde_json::from_str(&to_compiled_json(&s)).unwrap();
    v["version"] = json!(COMPILED_SCHEMA_VERSION + 1);
    std::fs::write(&path, v.to_string()).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(
        e.contains("schema.compiled.json") && e.contains("version"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_warnings() {
    let mut v = sdk_json();
    v["federation"] = json!({"enabled": true});
    v["types"][0]["cache_ttl"] = json!(60);
    v["types"][1]["fields"][0]["deprecated"] = json!(true);
    v["queries"][0]["auto_params"]["first"] = json!(true);
    let (_, warnings) = compile_value(&v).unwrap();
    let text: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 4, "{text:?}");
    assert!(
        text.iter()
            .any(|w| w.contains("federation") && w.contains("top level"))
    );
    assert!(
        text.iter()
            .any(|w| w.contains("types[Comment]") && w.contains("cache_ttl"))
    );
    assert!(
        text.iter()
            .any(|w| w.contains("types[Post].fields[id]") && w.contains("deprecated"))
    );
    assert!(
        text.iter()
            .any(|w| w.contains("queries[users].auto_params") && w.contains("first"))
    );
    assert!(text[0].starts_with("schema.json: "));
}

#[test]
fn errors_name_file_type_field_and_query() {
    let mut v = sdk_json();
    v["types"][1]["fields"][2]
        .as_object_mut()
        .unwrap()
        .remove("type");
    let e = err_text(&v);
    assert!(
        e.starts_with("schema.json: types[Post].fields[body]"),
        "{e}"
    );
    assert!(e.contains("missing required key `type`"), "{e}");

    let mut v = sdk_json();
    v["types"][2]["fields"][4]["type"] = json!("Rank");
    let e = err_text(&v);
    assert!(
        e.contains("types[User].fields[role]") && e.contains("unknown output type `Rank`"),
        "{e}"
    );

    let mut v = sdk_json();
    v["queries"][1]
        .as_object_mut()
        .unwrap()
        .remove("return_type");
    let e = err_text(&v);
    assert!(
        e.contains("queries[user]") && e.contains("return_type"),
        "{e}"
    );

    let mut v = sdk_json();
    v["queries"][0]["return_type"] = json!("Nope");
    assert!(err_text(&v).contains("queries[users]: return_type `Nope`"));

    let mut v = sdk_json();
    v["mutations"][0]
        .as_object_mut()
        .unwrap()
        .remove("sql_source");
    assert!(err_text(&v).contains("mutations[createPost]: missing required key `sql_source`"));

    let mut v = sdk_json();
    v["mutations"][0]["operation"] = json!("UPSERT");
    assert!(err_text(&v).contains("unknown operation `UPSERT`"));

    let mut v = sdk_json();
    v["types"][0].as_object_mut().unwrap().remove("name");
    assert!(err_text(&v).contains("types[0]: missing required key `name`"));

    let mut v = sdk_json();
    v["types"][0]["name"] = json!("Bad Name");
    assert!(err_text(&v).contains("not a valid GraphQL name"));

    let mut v = sdk_json();
    v["queries"][0]["arguments"][0]["default"] = json!("ten");
    assert!(err_text(&v).contains("default value \"ten\" does not match type Int!"));

    let mut v = sdk_json();
    v["queries"][1]["arguments"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "nickname", "type": "String", "nullable": true}));
    assert!(
        err_text(&v)
            .contains("queries[user].arguments[nickname]: argument `nickname` matches no field")
    );

    let mut v = sdk_json();
    v["types"].as_array_mut().unwrap().push(json!({"name": "UserWhereInput", "fields": [{"name": "x", "type": "Int", "nullable": true}]}));
    assert!(err_text(&v).contains("clashes"));

    let e = compile_str("{\"types\": [", "broken.json")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("broken.json: invalid JSON at line 1"), "{e}");

    let e = compile_file(std::path::Path::new("/nonexistent/schema.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/schema.json"), "{e}");
}

#[test]
fn example_blog_schema_compiles() {
    let (s, warnings) = compile_file(&crate_path("examples/blog/schema.json")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let q = s.query("userByIdentifier").unwrap();
    assert_eq!(q.arguments[0].role, ArgRole::Equals);
    assert_eq!(
        s.object("User").unwrap().field("score").unwrap().ty.kind,
        NamedKind::Scalar(ScalarKind::BigInt)
    );
    Engine::new(Arc::new(s), Limits::default()).unwrap();
}
