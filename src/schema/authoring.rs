//! Serde model of `schema.json` as the FraiseQL authoring SDKs export it.
//!
//! Every struct keeps the keys it does not know in `extra`, so that the compiler can warn
//! about them (a newer SDK may add keys) instead of failing.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Unknown keys of one JSON object.
pub type Extra = BTreeMap<String, Value>;

/// The whole `schema.json` document.
#[derive(Debug, Deserialize)]
pub struct AuthoringSchema {
    #[serde(default)]
    pub types: Vec<AuthoringType>,
    #[serde(default)]
    pub enums: Vec<AuthoringEnum>,
    #[serde(default)]
    pub input_types: Vec<AuthoringInput>,
    #[serde(default)]
    pub interfaces: Vec<Value>,
    #[serde(default)]
    pub unions: Vec<Value>,
    #[serde(default)]
    pub queries: Vec<AuthoringQuery>,
    #[serde(default)]
    pub mutations: Vec<AuthoringMutation>,
    #[serde(default)]
    pub subscriptions: Vec<Value>,
    #[serde(default)]
    pub naming_convention: Option<String>,
    /// The project's `[inject_defaults]` (from `fraiseql.toml`), as the SDK exports it.
    #[serde(default)]
    pub inject_defaults: Option<InjectDefaults>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `inject_defaults`: `param -> "jwt:<claim>"` for every operation (`base`), and for every
/// query or every mutation.
#[derive(Debug, Default, Deserialize)]
pub struct InjectDefaults {
    #[serde(default)]
    pub base: BTreeMap<String, String>,
    #[serde(default)]
    pub queries: BTreeMap<String, String>,
    #[serde(default)]
    pub mutations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An object type backed by a view.
#[derive(Debug, Deserialize)]
pub struct AuthoringType {
    pub name: Option<String>,
    #[serde(default)]
    pub sql_source: Option<String>,
    pub fields: Option<Vec<AuthoringField>>,
    #[serde(default)]
    pub description: Option<String>,
    /// Only identities with this role may read the type (and every field returning it).
    #[serde(default)]
    pub requires_role: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A field of an object or input type.
#[derive(Debug, Deserialize)]
pub struct AuthoringField {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    #[serde(default)]
    pub nullable: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
    /// Explicit key inside `data` (not emitted by SDK 2.18, accepted when present).
    #[serde(default)]
    pub sql_column: Option<String>,
    #[serde(default)]
    pub default: Option<Value>,
    /// The scope a token needs to read the field.
    #[serde(default)]
    pub requires_scope: Option<String>,
    /// `reject` (default: an error at the field's path) or `mask` (null).
    #[serde(default)]
    pub on_deny: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An enum with GraphQL names and stored values.
#[derive(Debug, Deserialize)]
pub struct AuthoringEnum {
    pub name: Option<String>,
    pub values: Option<Vec<AuthoringEnumValue>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One enum value: the GraphQL `name` and the `value` stored in the view.
#[derive(Debug, Deserialize)]
pub struct AuthoringEnumValue {
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An input object type.
#[derive(Debug, Deserialize)]
pub struct AuthoringInput {
    pub name: Option<String>,
    pub fields: Option<Vec<AuthoringField>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `auto_params` of a list query.
#[derive(Debug, Default, Deserialize)]
pub struct AutoParams {
    #[serde(default)]
    pub r#where: bool,
    #[serde(default)]
    pub order_by: bool,
    #[serde(default)]
    pub limit: bool,
    #[serde(default)]
    pub offset: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One `inject_params` entry: `{"source": "jwt", "claim": "tenant_id"}`.
#[derive(Debug, Deserialize)]
pub struct AuthoringInject {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A root query field.
#[derive(Debug, Deserialize)]
pub struct AuthoringQuery {
    pub name: Option<String>,
    pub return_type: Option<String>,
    #[serde(default)]
    pub returns_list: bool,
    #[serde(default)]
    pub nullable: Option<bool>,
    #[serde(default)]
    pub arguments: Vec<AuthoringField>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub sql_source: Option<String>,
    #[serde(default)]
    pub auto_params: Option<AutoParams>,
    /// Actor types (the token's actor claim) allowed to run the field.
    #[serde(default)]
    pub requires_actor: Option<Vec<String>>,
    /// Parameters taken from the verified token, never from the client.
    #[serde(default)]
    pub inject_params: Option<BTreeMap<String, AuthoringInject>>,
    /// Names of `inject_defaults` this operation opts out of.
    #[serde(default)]
    pub exclude_inject_defaults: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A root mutation field backed by a `fn_*` function.
#[derive(Debug, Deserialize)]
pub struct AuthoringMutation {
    pub name: Option<String>,
    pub return_type: Option<String>,
    #[serde(default)]
    pub returns_list: bool,
    #[serde(default)]
    pub nullable: Option<bool>,
    #[serde(default)]
    pub arguments: Vec<AuthoringField>,
    #[serde(default)]
    pub description: Option<String>,
    pub sql_source: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    /// Actor types (the token's actor claim) allowed to run the field.
    #[serde(default)]
    pub requires_actor: Option<Vec<String>>,
    /// Parameters taken from the verified token, never from the client.
    #[serde(default)]
    pub inject_params: Option<BTreeMap<String, AuthoringInject>>,
    /// Names of `inject_defaults` this operation opts out of.
    #[serde(default)]
    pub exclude_inject_defaults: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}
