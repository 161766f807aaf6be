//! The compiled schema: everything the runtime needs, versioned and (de)serializable as
//! `schema.compiled.json`. Produced by the compiler from the authoring format; the
//! generated `where`/`orderBy` inputs are spelled out so the file is self-describing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version written into `schema.compiled.json`; the loader refuses other versions except
/// [`COMPILED_SCHEMA_VERSION_NO_RULES`]. Version 2 added the authorization rules, so that a
/// binary that would ignore them refuses the file instead of serving it unrestricted.
pub const COMPILED_SCHEMA_VERSION: u32 = 2;

/// The version before authorization rules existed: still read (it cannot carry any).
pub const COMPILED_SCHEMA_VERSION_NO_RULES: u32 = 1;

/// The compiled schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompiledSchema {
    pub version: u32,
    pub types: Vec<ObjectType>,
    pub enums: Vec<EnumType>,
    pub input_types: Vec<InputType>,
    /// Generated per-scalar (and per-enum) operator inputs, e.g. `StringFilter`.
    pub filters: Vec<FilterInput>,
    /// Generated `<Type>WhereInput` inputs.
    pub where_inputs: Vec<WhereInput>,
    /// Generated `<Type>OrderBy` inputs.
    pub order_inputs: Vec<OrderInput>,
    pub queries: Vec<QueryField>,
    pub mutations: Vec<MutationField>,
}

/// Scalars the runtime knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum ScalarKind {
    #[serde(rename = "ID")]
    Id,
    String,
    Int,
    Float,
    Boolean,
    DateTime,
    Date,
    Time,
    #[serde(rename = "UUID")]
    Uuid,
    #[serde(rename = "JSON")]
    Json,
    BigInt,
    Decimal,
}

impl ScalarKind {
    /// Every scalar, in a fixed order.
    pub const ALL: [ScalarKind; 12] = [
        ScalarKind::Id,
        ScalarKind::String,
        ScalarKind::Int,
        ScalarKind::Float,
        ScalarKind::Boolean,
        ScalarKind::DateTime,
        ScalarKind::Date,
        ScalarKind::Time,
        ScalarKind::Uuid,
        ScalarKind::Json,
        ScalarKind::BigInt,
        ScalarKind::Decimal,
    ];

    /// The GraphQL name.
    pub fn name(self) -> &'static str {
        match self {
            ScalarKind::Id => "ID",
            ScalarKind::String => "String",
            ScalarKind::Int => "Int",
            ScalarKind::Float => "Float",
            ScalarKind::Boolean => "Boolean",
            ScalarKind::DateTime => "DateTime",
            ScalarKind::Date => "Date",
            ScalarKind::Time => "Time",
            ScalarKind::Uuid => "UUID",
            ScalarKind::Json => "JSON",
            ScalarKind::BigInt => "BigInt",
            ScalarKind::Decimal => "Decimal",
        }
    }

    /// Looks a scalar up by its GraphQL name (`UUID` is also accepted as `Uuid`).
    pub fn from_name(name: &str) -> Option<ScalarKind> {
        Some(match name {
            "ID" => ScalarKind::Id,
            "String" | "str" => ScalarKind::String,
            "Int" | "int" => ScalarKind::Int,
            "Float" | "float" => ScalarKind::Float,
            "Boolean" | "bool" => ScalarKind::Boolean,
            "DateTime" => ScalarKind::DateTime,
            "Date" => ScalarKind::Date,
            "Time" => ScalarKind::Time,
            "UUID" | "Uuid" => ScalarKind::Uuid,
            "JSON" | "Json" | "JSONObject" => ScalarKind::Json,
            "BigInt" | "Long" => ScalarKind::BigInt,
            "Decimal" => ScalarKind::Decimal,
            _ => return None,
        })
    }

    /// Built into GraphQL (no scalar definition needed).
    pub fn is_builtin(self) -> bool {
        matches!(
            self,
            ScalarKind::Id
                | ScalarKind::String
                | ScalarKind::Int
                | ScalarKind::Float
                | ScalarKind::Boolean
        )
    }

    /// The operators a filter on this scalar offers (empty: no filter).
    pub fn operators(self) -> &'static [Operator] {
        use Operator::*;
        match self {
            ScalarKind::Id | ScalarKind::String => &[
                Eq,
                Neq,
                Gt,
                Gte,
                Lt,
                Lte,
                In,
                Nin,
                Contains,
                Icontains,
                Startswith,
                Istartswith,
                Endswith,
                Iendswith,
                Like,
                Ilike,
                Isnull,
            ],
            ScalarKind::Int
            | ScalarKind::Float
            | ScalarKind::BigInt
            | ScalarKind::Decimal
            | ScalarKind::DateTime
            | ScalarKind::Date
            | ScalarKind::Time => &[Eq, Neq, Gt, Gte, Lt, Lte, In, Nin, Isnull],
            ScalarKind::Boolean => &[Eq, Neq, Isnull],
            ScalarKind::Uuid => &[Eq, Neq, In, Nin, Isnull],
            ScalarKind::Json => &[Isnull],
        }
    }
}

/// Filter operators.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
    Contains,
    Icontains,
    Startswith,
    Istartswith,
    Endswith,
    Iendswith,
    Like,
    Ilike,
    Isnull,
}

impl Operator {
    /// The GraphQL input field name.
    pub fn name(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Neq => "neq",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::In => "in",
            Operator::Nin => "nin",
            Operator::Contains => "contains",
            Operator::Icontains => "icontains",
            Operator::Startswith => "startswith",
            Operator::Istartswith => "istartswith",
            Operator::Endswith => "endswith",
            Operator::Iendswith => "iendswith",
            Operator::Like => "like",
            Operator::Ilike => "ilike",
            Operator::Isnull => "isnull",
        }
    }

    /// Looks an operator up by its GraphQL name.
    pub fn from_name(name: &str) -> Option<Operator> {
        use Operator::*;
        [
            Eq,
            Neq,
            Gt,
            Gte,
            Lt,
            Lte,
            In,
            Nin,
            Contains,
            Icontains,
            Startswith,
            Istartswith,
            Endswith,
            Iendswith,
            Like,
            Ilike,
            Isnull,
        ]
        .into_iter()
        .find(|o| o.name() == name)
    }
}

/// What a named type is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", content = "scalar")]
pub enum NamedKind {
    Scalar(ScalarKind),
    Enum,
    Object,
    Input,
}

/// A reference to a type with its wrappers: `T`, `T!`, `[T]`, `[T!]!` …
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TypeRef {
    pub name: String,
    pub kind: NamedKind,
    pub nullable: bool,
    pub list: bool,
    /// For lists: whether the items may be null.
    pub item_nullable: bool,
}

impl TypeRef {
    /// The GraphQL spelling (`[Post!]!`).
    pub fn display(&self) -> String {
        let inner = if self.list {
            format!(
                "[{}{}]",
                self.name,
                if self.item_nullable { "" } else { "!" }
            )
        } else {
            self.name.clone()
        };
        if self.nullable {
            inner
        } else {
            format!("{inner}!")
        }
    }
}

/// An object type read from a view's `data`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectType {
    pub name: String,
    pub description: Option<String>,
    /// The view a root query on this type reads (`v_user`), when it has one.
    pub sql_source: Option<String>,
    pub fields: Vec<FieldDef>,
    /// Name of the generated `<Type>WhereInput`.
    pub where_input: String,
    /// Name of the generated `<Type>OrderBy`.
    pub order_input: String,
    /// Only this role may read the type and every field returning it (SDK `requires_role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_role: Option<String>,
}

impl ObjectType {
    /// A field by GraphQL name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A field of an object type: GraphQL name → `data` key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldDef {
    pub name: String,
    /// Key inside the view's `data` (snake_case).
    pub key: String,
    pub ty: TypeRef,
    pub description: Option<String>,
    /// The scope a token needs to read the field (SDK `requires_scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_scope: Option<String>,
    /// What a token without the scope gets.
    #[serde(default, skip_serializing_if = "OnDeny::is_reject")]
    pub on_deny: OnDeny,
}

/// What a field withheld for a missing scope becomes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnDeny {
    /// An error at the field's path (`FORBIDDEN`), the value null (with null propagation).
    #[default]
    Reject,
    /// Null without an error; the compiler makes such a field nullable.
    Mask,
}

impl OnDeny {
    fn is_reject(&self) -> bool {
        *self == OnDeny::Reject
    }
}

/// A parameter whose value comes from the verified token (SDK `inject_params`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InjectParam {
    /// The parameter: on a query the view column or `data` key filtered on, on a mutation
    /// the key of the function's input.
    pub param: String,
    /// The claim path read from the token.
    pub claim: String,
    /// `jwt_optional` (mutations only): an absent claim passes null instead of refusing.
    #[serde(default)]
    pub optional: bool,
}

/// An enum: GraphQL names and the values stored in `data`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnumType {
    pub name: String,
    pub description: Option<String>,
    pub values: Vec<EnumValueDef>,
}

impl EnumType {
    /// The stored value of a GraphQL enum name.
    pub fn stored(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }
}

/// One enum value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnumValueDef {
    pub name: String,
    /// The value stored in the view (`admin` for `ADMIN`).
    pub value: String,
    pub description: Option<String>,
}

/// A user-declared input object type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputType {
    pub name: String,
    pub description: Option<String>,
    pub fields: Vec<ArgDef>,
}

/// An argument or input field: GraphQL name → snake_case key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArgDef {
    pub name: String,
    pub key: String,
    pub ty: TypeRef,
    pub default: Option<Value>,
    pub description: Option<String>,
}

/// A generated operator input for one scalar or enum (`StringFilter`, `RoleFilter`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FilterInput {
    pub name: String,
    /// The scalar compared, or `None` for an enum filter.
    pub scalar: Option<ScalarKind>,
    /// The enum compared, for an enum filter.
    pub enum_name: Option<String>,
    pub operators: Vec<Operator>,
}

/// A generated `<Type>WhereInput`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhereInput {
    pub name: String,
    pub type_name: String,
    pub fields: Vec<WhereField>,
}

/// One field of a where input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhereField {
    pub name: String,
    pub key: String,
    pub target: WhereTarget,
}

/// What a where field compares.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind")]
pub enum WhereTarget {
    /// A leaf compared with a filter input.
    Filter { filter: String },
    /// A nested object (path into `data`).
    Object { where_input: String },
    /// A nested list: true when any element matches.
    List { where_input: String },
    /// A list of scalars: true when any element matches (`isnull` tests the list itself).
    ScalarList { filter: String },
}

/// A generated `<Type>OrderBy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderInput {
    pub name: String,
    pub type_name: String,
    pub fields: Vec<OrderField>,
}

/// One sortable field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderField {
    pub name: String,
    pub key: String,
    /// The scalar (for the SQL cast); `None` for an enum (sorted as text).
    pub scalar: Option<ScalarKind>,
}

/// Which generated arguments a query has.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AutoArgs {
    pub r#where: bool,
    pub order_by: bool,
    pub limit: bool,
    pub offset: bool,
}

/// What a declared query argument does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ArgRole {
    /// Filters on the view's `id` column.
    Id,
    /// `where: <Type>WhereInput`.
    Where,
    /// `orderBy: [<Type>OrderBy!]`.
    OrderBy,
    Limit,
    Offset,
    /// Equality on the `data` key of the same name.
    Equals,
}

/// A query argument with its role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryArg {
    pub arg: ArgDef,
    pub role: ArgRole,
}

/// A root query field reading a view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryField {
    pub name: String,
    pub description: Option<String>,
    pub return_type: String,
    pub returns_list: bool,
    pub nullable: bool,
    /// Every argument, declared and generated, in GraphQL order.
    pub arguments: Vec<QueryArg>,
    /// The view read.
    pub view: String,
    /// Actor types allowed to run the query (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_actor: Vec<String>,
    /// Row filters taken from the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject: Vec<InjectParam>,
}

/// The kind of change a mutation makes, for the change log.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum MutationOperation {
    Create,
    Update,
    Delete,
    Function,
    Custom,
}

impl MutationOperation {
    /// The change-log `op`.
    pub fn change_op(self) -> &'static str {
        match self {
            MutationOperation::Create => "INSERT",
            MutationOperation::Delete => "DELETE",
            MutationOperation::Update | MutationOperation::Function | MutationOperation::Custom => {
                "UPDATE"
            }
        }
    }
}

/// A root mutation field calling a function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MutationField {
    pub name: String,
    pub description: Option<String>,
    pub return_type: String,
    pub returns_list: bool,
    pub nullable: bool,
    pub arguments: Vec<ArgDef>,
    /// The function called (`fn_create_post`).
    pub function: String,
    pub operation: MutationOperation,
    /// Actor types allowed to run the mutation (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_actor: Vec<String>,
    /// Input keys taken from the token, overriding whatever the client sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject: Vec<InjectParam>,
}

impl CompiledSchema {
    /// An object type by name.
    pub fn object(&self, name: &str) -> Option<&ObjectType> {
        self.types.iter().find(|t| t.name == name)
    }
    /// An enum by name.
    pub fn enum_type(&self, name: &str) -> Option<&EnumType> {
        self.enums.iter().find(|t| t.name == name)
    }
    /// A user input type by name.
    pub fn input_type(&self, name: &str) -> Option<&InputType> {
        self.input_types.iter().find(|t| t.name == name)
    }
    /// A filter input by name.
    pub fn filter(&self, name: &str) -> Option<&FilterInput> {
        self.filters.iter().find(|t| t.name == name)
    }
    /// A where input by name.
    pub fn where_input(&self, name: &str) -> Option<&WhereInput> {
        self.where_inputs.iter().find(|t| t.name == name)
    }
    /// An order input by name.
    pub fn order_input(&self, name: &str) -> Option<&OrderInput> {
        self.order_inputs.iter().find(|t| t.name == name)
    }
    /// A root query by name.
    pub fn query(&self, name: &str) -> Option<&QueryField> {
        self.queries.iter().find(|q| q.name == name)
    }
    /// A root mutation by name.
    pub fn mutation(&self, name: &str) -> Option<&MutationField> {
        self.mutations.iter().find(|q| q.name == name)
    }
    /// Custom scalars used anywhere in the schema (sorted, deduplicated).
    pub fn custom_scalars(&self) -> Vec<ScalarKind> {
        let mut out: Vec<ScalarKind> = Vec::new();
        let mut add = |t: &TypeRef| {
            if let NamedKind::Scalar(s) = t.kind
                && !s.is_builtin()
                && !out.contains(&s)
            {
                out.push(s);
            }
        };
        for t in &self.types {
            t.fields.iter().for_each(|f| add(&f.ty));
        }
        for t in &self.input_types {
            t.fields.iter().for_each(|f| add(&f.ty));
        }
        for q in &self.queries {
            q.arguments.iter().for_each(|a| add(&a.arg.ty));
        }
        for m in &self.mutations {
            m.arguments.iter().for_each(|a| add(&a.ty));
        }
        for f in &self.filters {
            if let Some(s) = f.scalar
                && !s.is_builtin()
                && !out.contains(&s)
            {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.name());
        out
    }
}
