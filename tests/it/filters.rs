//! Every `where` operator on every kind of scalar, enums, nested object paths, nested lists
//! and `_and`/`_or`/`_not`; expected rows computed in Rust from the seed.

use crate::common;

use common::*;
use serde_json::{Value, json};

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

fn expect_posts(seed: &Seed, f: impl Fn(&SeedPost) -> bool) -> Vec<String> {
    let mut v: Vec<String> = seed
        .posts
        .iter()
        .filter(|p| f(p))
        .map(|p| p.id.to_string())
        .collect();
    v.sort();
    v
}

fn expect_users(seed: &Seed, f: impl Fn(&SeedUser) -> bool) -> Vec<String> {
    let mut v: Vec<String> = seed
        .users
        .iter()
        .filter(|u| f(u))
        .map(|u| u.id.to_string())
        .collect();
    v.sort();
    v
}

struct Ctx {
    db: TestDb,
    engine: fraiseql::graphql::Engine,
}

impl Ctx {
    async fn posts(&self, filter: Value) -> Vec<String> {
        let d = data(
            &self.engine,
            self.db.pool(),
            "query($w: PostWhereInput) { posts(where: $w, limit: 1000) { id } }",
            json!({ "w": filter }),
        )
        .await;
        ids(&d["posts"])
    }
    async fn posts_literal(&self, filter: &str) -> Vec<String> {
        let d = data(
            &self.engine,
            self.db.pool(),
            &format!("{{ posts(where: {filter}, limit: 1000) {{ id }} }}"),
            json!({}),
        )
        .await;
        ids(&d["posts"])
    }
    async fn users(&self, filter: Value) -> Vec<String> {
        let d = data(
            &self.engine,
            self.db.pool(),
            "query($w: UserWhereInput) { users(where: $w, limit: 1000) { id } }",
            json!({ "w": filter }),
        )
        .await;
        ids(&d["users"])
    }
}

#[tokio::test]
async fn string_operators() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let c = Ctx {
        db,
        engine: blog_engine(),
    };
    let t = &seed.posts[10].title;
    assert_eq!(
        c.posts(json!({"title": {"eq": t}})).await,
        expect_posts(&seed, |p| &p.title == t)
    );
    assert_eq!(
        c.posts(json!({"title": {"neq": t}})).await,
        expect_posts(&seed, |p| &p.title != t)
    );
    assert_eq!(
        c.posts(json!({"title": {"gt": "Post 5"}})).await,
        expect_posts(&seed, |p| p.title.as_str() > "Post 5")
    );
    assert_eq!(
        c.posts(json!({"title": {"gte": t}})).await,
        expect_posts(&seed, |p| &p.title >= t)
    );
    assert_eq!(
        c.posts(json!({"title": {"lt": "Post 2"}})).await,
        expect_posts(&seed, |p| p.title.as_str() < "Post 2")
    );
    assert_eq!(
        c.posts(json!({"title": {"lte": t}})).await,
        expect_posts(&seed, |p| &p.title <= t)
    );
    let some = [
        seed.posts[0].title.clone(),
        seed.posts[3].title.clone(),
        "nope".to_owned(),
    ];
    assert_eq!(
        c.posts(json!({"title": {"in": some}})).await,
        expect_posts(&seed, |p| some.contains(&p.title))
    );
    assert_eq!(
        c.posts(json!({"title": {"nin": some}})).await,
        expect_posts(&seed, |p| !some.contains(&p.title))
    );
    assert_eq!(
        c.posts(json!({"title": {"in": []}})).await,
        Vec::<String>::new()
    );
    assert_eq!(
        c.posts(json!({"title": {"contains": "user-07"}})).await,
        expect_posts(&seed, |p| p.title.contains("user-07"))
    );
    assert_eq!(
        c.posts(json!({"title": {"icontains": "USER-07"}})).await,
        expect_posts(&seed, |p| p.title.contains("user-07"))
    );
    assert_eq!(
        c.posts(json!({"title": {"startswith": "Post 1"}})).await,
        expect_posts(&seed, |p| p.title.starts_with("Post 1"))
    );
    assert_eq!(
        c.posts(json!({"title": {"istartswith": "post 1"}})).await,
        expect_posts(&seed, |p| p.title.starts_with("Post 1"))
    );
    assert_eq!(
        c.posts(json!({"title": {"endswith": "user-10"}})).await,
        expect_posts(&seed, |p| p.title.ends_with("user-10"))
    );
    assert_eq!(
        c.posts(json!({"title": {"iendswith": "USER-10"}})).await,
        expect_posts(&seed, |p| p.title.ends_with("user-10"))
    );
    // Wildcards in contains/startswith are literal characters.
    assert_eq!(
        c.posts(json!({"body": {"contains": "100%"}})).await,
        expect_posts(&seed, |p| p.body.contains("100%"))
    );
    assert_eq!(
        c.posts(json!({"body": {"contains": "_special_"}})).await,
        expect_posts(&seed, |p| p.body.contains("_special_"))
    );
    assert_eq!(
        c.posts(json!({"body": {"endswith": "%"}})).await,
        Vec::<String>::new()
    );
    assert_eq!(
        c.posts(json!({"body": {"contains": "%"}})).await.len(),
        seed.posts.iter().filter(|p| p.body.contains('%')).count()
    );
    // like / ilike take patterns.
    assert_eq!(
        c.posts(json!({"title": {"like": "Post _ by %"}})).await,
        expect_posts(&seed, |p| p.p < 10)
    );
    assert_eq!(
        c.posts(json!({"title": {"ilike": "post 1_ BY %"}})).await,
        expect_posts(&seed, |p| (10..20).contains(&p.p))
    );
    // ID fields take string operators.
    let id = seed.posts[5].id.to_string();
    assert_eq!(c.posts(json!({"id": {"eq": id}})).await, vec![id.clone()]);
    assert_eq!(
        c.posts(json!({"id": {"endswith": "00000000000a"}})).await,
        expect_posts(&seed, |p| p.p == 10)
    );
    // Several operators in one filter are ANDed; literals work as well as variables.
    assert_eq!(
        c.posts_literal("{title: {startswith: \"Post 1\", endswith: \"user-04\"}}")
            .await,
        expect_posts(&seed, |p| p.title.starts_with("Post 1")
            && p.title.ends_with("user-04"))
    );
}

#[tokio::test]
async fn number_boolean_timestamp_and_null_operators() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let c = Ctx {
        db,
        engine: blog_engine(),
    };
    assert_eq!(
        c.posts(json!({"views": {"eq": 37}})).await,
        expect_posts(&seed, |p| p.views == 37)
    );
    assert_eq!(
        c.posts(json!({"views": {"neq": 37}})).await,
        expect_posts(&seed, |p| p.views != 37)
    );
    assert_eq!(
        c.posts(json!({"views": {"gt": 500}})).await,
        expect_posts(&seed, |p| p.views > 500)
    );
    assert_eq!(
        c.posts(json!({"views": {"gte": 999}})).await,
        expect_posts(&seed, |p| p.views >= 999)
    );
    assert_eq!(
        c.posts(json!({"views": {"lt": 100}})).await,
        expect_posts(&seed, |p| p.views < 100),
        "numeric, not text, comparison"
    );
    assert_eq!(
        c.posts(json!({"views": {"lte": 74}})).await,
        expect_posts(&seed, |p| p.views <= 74)
    );
    assert_eq!(
        c.posts(json!({"views": {"in": [37, 74, 5]}})).await,
        expect_posts(&seed, |p| [37, 74, 5].contains(&p.views))
    );
    assert_eq!(
        c.posts(json!({"views": {"nin": [37, 74]}})).await,
        expect_posts(&seed, |p| ![37, 74].contains(&p.views))
    );
    assert_eq!(
        c.posts(json!({"views": {"gt": 100, "lt": 200}})).await,
        expect_posts(&seed, |p| p.views > 100 && p.views < 200)
    );
    // Float (nullable): comparisons skip nulls; isnull finds them.
    assert_eq!(
        c.posts(json!({"rating": {"gt": 4.5}})).await,
        expect_posts(&seed, |p| p.rating.is_some_and(|r| r > 4.5))
    );
    assert_eq!(
        c.posts(json!({"rating": {"lte": 0.3}})).await,
        expect_posts(&seed, |p| p.rating.is_some_and(|r| r <= 0.3))
    );
    assert_eq!(
        c.posts(json!({"rating": {"eq": 1}})).await,
        expect_posts(&seed, |p| p.rating == Some(1.0))
    );
    assert_eq!(
        c.posts(json!({"rating": {"isnull": true}})).await,
        expect_posts(&seed, |p| p.rating.is_none())
    );
    assert_eq!(
        c.posts(json!({"rating": {"isnull": false}})).await,
        expect_posts(&seed, |p| p.rating.is_some())
    );
    // Boolean.
    assert_eq!(
        c.posts(json!({"published": {"eq": true}})).await,
        expect_posts(&seed, |p| p.published)
    );
    assert_eq!(
        c.posts(json!({"published": {"neq": true}})).await,
        expect_posts(&seed, |p| !p.published)
    );
    // Timestamps compare as instants, whatever the offset written.
    let t = seed.posts[99].created_at;
    assert_eq!(
        c.posts(json!({"createdAt": {"gt": t.to_rfc3339()}})).await,
        expect_posts(&seed, |p| p.created_at > t)
    );
    let t_plus2 = t
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    assert_eq!(
        c.posts(json!({"createdAt": {"eq": t_plus2}})).await,
        expect_posts(&seed, |p| p.created_at == t)
    );
    assert_eq!(c.posts(json!({"createdAt": {"gte": t.to_rfc3339(), "lt": (t + chrono::Duration::hours(3)).to_rfc3339()}})).await, expect_posts(&seed, |p| p.created_at >= t && p.created_at < t + chrono::Duration::hours(3)));
    assert_eq!(
        c.posts(json!({"createdAt": {"lte": seed.posts[2].created_at.to_rfc3339()}}))
            .await,
        expect_posts(&seed, |p| p.p <= 3)
    );
    assert_eq!(c.posts(json!({"createdAt": {"in": [seed.posts[0].created_at.to_rfc3339(), seed.posts[7].created_at.to_rfc3339()]}})).await, expect_posts(&seed, |p| p.p == 1 || p.p == 8));
    assert_eq!(
        c.posts(json!({"createdAt": {"nin": [seed.posts[0].created_at.to_rfc3339()]}}))
            .await,
        expect_posts(&seed, |p| p.p != 1)
    );
    // BigInt: beyond 32 bits, as a string or a number.
    assert_eq!(
        c.users(json!({"score": {"gt": "30000000000"}})).await,
        expect_users(&seed, |u| u.score > 30_000_000_000)
    );
    assert_eq!(
        c.users(json!({"score": {"lte": 3000000000_i64}})).await,
        expect_users(&seed, |u| u.score <= 3_000_000_000)
    );
    // String isnull.
    assert_eq!(
        c.users(json!({"email": {"isnull": true}})).await,
        expect_users(&seed, |u| u.email.is_none())
    );
    assert_eq!(
        c.users(json!({"email": {"isnull": false}})).await,
        expect_users(&seed, |u| u.email.is_some())
    );
    let v = gql(
        &c.engine,
        c.db.pool(),
        "query($w: UserWhereInput) { users(where: $w) { id } }",
        json!({"w": {"email2": {"isnull": true}}}),
    )
    .await;
    assert!(
        v["errors"].is_array() && v.get("data").is_none(),
        "unknown filter fields are rejected: {v}"
    );
}

#[tokio::test]
async fn enums_nested_paths_lists_and_logic() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let c = Ctx {
        db,
        engine: blog_engine(),
    };
    // Enums: GraphQL names in, stored values compared.
    assert_eq!(
        c.users(json!({"role": {"eq": "ADMIN"}})).await,
        expect_users(&seed, |u| u.role == "admin")
    );
    assert_eq!(
        c.users(json!({"role": {"neq": "READER"}})).await,
        expect_users(&seed, |u| u.role != "reader")
    );
    assert_eq!(
        c.users(json!({"role": {"in": ["ADMIN", "AUTHOR"]}})).await,
        expect_users(&seed, |u| u.role != "reader")
    );
    assert_eq!(
        c.users(json!({"role": {"nin": ["ADMIN"]}})).await,
        expect_users(&seed, |u| u.role != "admin")
    );
    let d = data(
        &c.engine,
        c.db.pool(),
        "{ users(where: {role: {eq: AUTHOR}}, limit: 100) { id role } }",
        json!({}),
    )
    .await;
    assert_eq!(
        ids(&d["users"]),
        expect_users(&seed, |u| u.role == "author")
    );
    assert!(
        d["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["role"] == "AUTHOR")
    );
    // An enum literal that is not a value is rejected (juniper alone would accept it).
    let v = gql(
        &c.engine,
        c.db.pool(),
        "{ users(where: {role: {eq: OWNER}}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        json!("BAD_USER_INPUT"),
        "{v}"
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a value of enum Role")
    );
    let v = gql(
        &c.engine,
        c.db.pool(),
        "query($w: UserWhereInput) { users(where: $w) { id } }",
        json!({"w": {"role": {"eq": "OWNER"}}}),
    )
    .await;
    assert!(v["errors"].is_array(), "variables are checked too: {v}");

    // Nested object path.
    assert_eq!(
        c.posts(json!({"author": {"identifier": {"eq": "user-05"}}}))
            .await,
        expect_posts(&seed, |p| seed.users[p.author].identifier == "user-05")
    );
    let d = data(
        &c.engine,
        c.db.pool(),
        "{ comments(where: {author: {name: {eq: \"User 03\"}}}, limit: 1000) { id } }",
        json!({}),
    )
    .await;
    let mut want: Vec<String> = seed
        .comments
        .iter()
        .filter(|x| seed.users[x.author].name == "User 03")
        .map(|x| x.id.to_string())
        .collect();
    want.sort();
    assert_eq!(ids(&d["comments"]), want);
    // Nested lists: any element matches, two levels deep.
    assert_eq!(
        c.users(json!({"posts": {"views": {"gt": 990}}})).await,
        expect_users(&seed, |u| u
            .posts
            .iter()
            .any(|&i| seed.posts[i].views > 990))
    );
    assert_eq!(
        c.users(json!({"posts": {"comments": {"body": {"eq": "Comment 7 on post 4"}}}}))
            .await,
        expect_users(&seed, |u| u.posts.iter().any(|&i| seed.posts[i]
            .comments
            .iter()
            .any(|&ci| seed.comments[ci].body == "Comment 7 on post 4")))
    );
    assert_eq!(
        c.posts(json!({"comments": {"author": {"identifier": {"eq": "user-01"}}}}))
            .await,
        expect_posts(&seed, |p| p
            .comments
            .iter()
            .any(|&ci| seed.comments[ci].author == 0))
    );
    // _and / _or / _not, nested.
    assert_eq!(
        c.posts(json!({"_or": [{"views": {"lt": 50}}, {"views": {"gt": 950}}]}))
            .await,
        expect_posts(&seed, |p| p.views < 50 || p.views > 950)
    );
    assert_eq!(
        c.posts(json!({"_and": [{"published": {"eq": true}}, {"rating": {"isnull": false}}]}))
            .await,
        expect_posts(&seed, |p| p.published && p.rating.is_some())
    );
    assert_eq!(
        c.posts(json!({"_not": {"published": {"eq": true}}})).await,
        expect_posts(&seed, |p| !p.published)
    );
    assert_eq!(
        c.posts(json!({"published": {"eq": true}, "_or": [{"_not": {"views": {"gte": 100}}}, {"_and": [{"author": {"identifier": {"eq": "user-10"}}}, {"tags": {"isnull": false}}]}]})).await,
        expect_posts(&seed, |p| p.published && (p.views < 100 || seed.users[p.author].identifier == "user-10"))
    );
    assert_eq!(
        c.posts(json!({"_or": []})).await.len(),
        seed.posts.len(),
        "an empty _or is no condition"
    );
}

#[tokio::test]
async fn scalar_list_elements() {
    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    let c = Ctx {
        db,
        engine: blog_engine(),
    };
    assert_eq!(
        c.posts(json!({"tags": {"eq": "tag1"}})).await,
        expect_posts(&seed, |p| p.tags.iter().any(|t| t == "tag1"))
    );
    assert_eq!(
        c.posts(json!({"tags": {"in": ["tag0", "tag2"]}})).await,
        expect_posts(&seed, |p| p.tags.iter().any(|t| t == "tag0" || t == "tag2"))
    );
    assert_eq!(
        c.posts(json!({"tags": {"startswith": "al"}})).await.len(),
        seed.posts.len()
    );
    assert_eq!(
        c.posts(json!({"tags": {"isnull": true}})).await,
        Vec::<String>::new()
    );
}

/// One filter language behind both doors: the same `where` document, given to GraphQL (over
/// `v_post`'s `data`) and to a Flight view ticket (over `va_post`'s native columns), selects
/// the same rows — the ones the seed says it should.
#[tokio::test]
async fn the_same_where_selects_the_same_rows_through_graphql_and_flight() {
    use fraiseql::flight::Registry;
    use fraiseql::flight::plan::plan_view;
    use fraiseql::flight::ticket::ViewTicket;

    let db = TestDb::new().await;
    let seed = db.load_blog().await;
    db.batch(
        "CREATE VIEW va_post AS \
         SELECT id, title, body, published, views, rating FROM tb_post",
    )
    .await;
    let registry = Registry::default();
    registry.refresh(db.pool()).await.expect("registry");
    let c = Ctx {
        db,
        engine: blog_engine(),
    };
    let t = seed.posts[10].title.clone();
    let some = [seed.posts[0].title.clone(), seed.posts[3].title.clone()];
    type Want = Box<dyn Fn(&SeedPost) -> bool>;
    let cases: Vec<(Value, Want)> = vec![
        (
            json!({"title": {"eq": t}}),
            Box::new({
                let t = t.clone();
                move |p| p.title == t
            }),
        ),
        (
            json!({"title": {"neq": t}}),
            Box::new({
                let t = t.clone();
                move |p| p.title != t
            }),
        ),
        (
            json!({"title": {"gt": "Post 5"}}),
            Box::new(|p| p.title.as_str() > "Post 5"),
        ),
        (
            json!({"title": {"gte": t}}),
            Box::new({
                let t = t.clone();
                move |p| p.title >= t
            }),
        ),
        (
            json!({"title": {"lt": "Post 2"}}),
            Box::new(|p| p.title.as_str() < "Post 2"),
        ),
        (
            json!({"title": {"lte": t}}),
            Box::new({
                let t = t.clone();
                move |p| p.title <= t
            }),
        ),
        (
            json!({"title": {"in": some}}),
            Box::new({
                let s = some.clone();
                move |p| s.contains(&p.title)
            }),
        ),
        (
            json!({"title": {"nin": some}}),
            Box::new({
                let s = some.clone();
                move |p| !s.contains(&p.title)
            }),
        ),
        (
            json!({"title": {"contains": "1"}}),
            Box::new(|p| p.title.contains('1')),
        ),
        (
            json!({"title": {"icontains": "POST 1"}}),
            Box::new(|p| p.title.to_lowercase().contains("post 1")),
        ),
        (
            json!({"title": {"startswith": "Post 1"}}),
            Box::new(|p| p.title.starts_with("Post 1")),
        ),
        (
            json!({"title": {"istartswith": "post 1"}}),
            Box::new(|p| p.title.to_lowercase().starts_with("post 1")),
        ),
        (
            json!({"title": {"endswith": "7"}}),
            Box::new(|p| p.title.ends_with('7')),
        ),
        (
            json!({"title": {"iendswith": "7"}}),
            Box::new(|p| p.title.ends_with('7')),
        ),
        (
            json!({"title": {"like": "Post _3"}}),
            Box::new(|p| {
                p.title.len() == 7 && p.title.starts_with("Post ") && p.title.ends_with('3')
            }),
        ),
        (
            json!({"title": {"ilike": "post %3"}}),
            Box::new(|p| p.title.to_lowercase().starts_with("post ") && p.title.ends_with('3')),
        ),
        (
            json!({"views": {"gt": 100, "lt": 200}}),
            Box::new(|p| p.views > 100 && p.views < 200),
        ),
        (
            json!({"views": {"in": [37, 74, 5]}}),
            Box::new(|p| [37, 74, 5].contains(&p.views)),
        ),
        (
            json!({"views": {"nin": [37, 74]}}),
            Box::new(|p| ![37, 74].contains(&p.views)),
        ),
        (
            json!({"rating": {"isnull": true}}),
            Box::new(|p| p.rating.is_none()),
        ),
        (
            json!({"rating": {"isnull": false, "gte": 2.5}}),
            Box::new(|p| p.rating.is_some_and(|r| r >= 2.5)),
        ),
        (
            json!({"published": {"eq": true}}),
            Box::new(|p| p.published),
        ),
        (
            json!({"_or": [{"views": {"lt": 50}}, {"title": {"contains": "9"}}],
                   "_not": {"published": {"eq": false}}}),
            Box::new(|p| (p.views < 50 || p.title.contains('9')) && p.published),
        ),
        (
            json!({"_and": [{"views": {"gte": 10}}, {"views": {"lte": 900}}]}),
            Box::new(|p| p.views >= 10 && p.views <= 900),
        ),
    ];
    let client = c.db.client().await;
    for (filter, want) in &cases {
        let expected = expect_posts(&seed, want);
        let through_graphql = c.posts(filter.clone()).await;
        let ticket = ViewTicket {
            view: "va_post".into(),
            columns: Some(vec!["id".into()]),
            filter: Some(filter.clone()),
            order_by: None,
            limit: None,
            offset: None,
        };
        let plan = plan_view(&ticket, &registry).expect("plan");
        let params: Vec<_> = plan.params.iter().map(|p| p.as_sql()).collect();
        let rows = client
            .query(&plan.sql, &params)
            .await
            .expect("flight statement");
        let mut through_flight: Vec<String> = rows
            .iter()
            .map(|r| r.get::<_, uuid::Uuid>(0).to_string())
            .collect();
        through_flight.sort();
        assert_eq!(through_graphql, expected, "graphql: {filter}");
        assert_eq!(through_flight, expected, "flight: {filter}");
    }
    let distinct: std::collections::HashSet<_> =
        cases.iter().map(|(_, w)| expect_posts(&seed, w)).collect();
    assert!(distinct.len() > 15, "the cases select different row sets");
}

/// A `where` within every per-list and depth bound can still expand into a statement of
/// megabytes: the total number of conditions is bounded too, and the refused request runs
/// nothing.
#[tokio::test]
async fn a_where_with_too_many_conditions_is_refused_before_any_sql_runs() {
    let db = TestDb::new().await;
    db.load_blog().await;
    let engine = blog_engine();
    // 10 × 500 = 5,000 conditions: every list below max_list_input, depth 3.
    let group = |g: i64| json!({"_or": (0..500).map(|i| json!({"views": {"eq": g * 500 + i}})).collect::<Vec<_>>()});
    let filter = json!({"_and": (0..10).map(group).collect::<Vec<_>>()});
    let v = gql(
        &engine,
        db.pool(),
        "query($w: PostWhereInput) { posts(where: $w, limit: 1000) { id } }",
        json!({ "w": filter }),
    )
    .await;
    let errs = errors(&v);
    assert_eq!(errs.len(), 1, "{v}");
    assert_eq!(errs[0].1, "LIMIT_EXCEEDED", "{v}");
    assert!(errs[0].0.contains("more than 1000 conditions"), "{v}");
    assert!(v["data"].is_null() || v["data"]["posts"].is_null(), "{v}");
}
