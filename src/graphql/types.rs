//! juniper runtime types built from the compiled schema: one Rust type ([`Node`]) stands
//! for every GraphQL type, and its [`Info`] names which one. juniper uses them to parse,
//! validate, coerce variables and answer introspection; the root fields are "resolved" by
//! planning one SQL statement each (see `plan`).

use std::sync::Arc;

use juniper::meta::{Argument, EnumValue, Field, MetaType, ScalarMeta};
use juniper::{
    ArcStr, Arguments, DefaultScalarValue, ExecutionResult, Executor, FieldError, FromInputValue,
    GraphQLType, GraphQLValue, InputValue, ParseScalarResult, ParseScalarValue, Registry,
    ScalarToken, Value,
};

use crate::schema::{ArgDef, CompiledSchema, NamedKind, Operator, ScalarKind, TypeRef};

use super::plan::{self, PlanCtx};

/// Which GraphQL type a [`Node`] stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Query,
    Mutation,
    /// The schema has no mutations (juniper hides a type of this name).
    NoMutation,
    Object,
    Enum,
    Input,
    Where,
    Order,
    Filter,
    Scalar(ScalarKind),
}

/// The type information juniper passes around: the schema and the type's name and kind.
#[derive(Debug, Clone)]
pub struct Info {
    pub schema: Arc<CompiledSchema>,
    pub kind: Kind,
    pub name: ArcStr,
}

impl Info {
    pub(crate) fn new(schema: &Arc<CompiledSchema>, kind: Kind, name: &str) -> Info {
        Info {
            schema: Arc::clone(schema),
            kind,
            name: ArcStr::from(name),
        }
    }

    fn for_ref(&self, ty: &TypeRef) -> Info {
        let kind = match ty.kind {
            NamedKind::Scalar(s) => Kind::Scalar(s),
            NamedKind::Enum => Kind::Enum,
            NamedKind::Object => Kind::Object,
            NamedKind::Input => self.input_kind(&ty.name),
        };
        Info::new(&self.schema, kind, &ty.name)
    }

    fn input_kind(&self, name: &str) -> Kind {
        let s = &self.schema;
        if s.where_input(name).is_some() {
            Kind::Where
        } else if s.order_input(name).is_some() {
            Kind::Order
        } else if s.filter(name).is_some() {
            Kind::Filter
        } else {
            Kind::Input
        }
    }
}

/// The one Rust type behind every runtime GraphQL type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Node;

impl FromInputValue<DefaultScalarValue> for Node {
    type Error = FieldError<DefaultScalarValue>;
    fn from_input_value(_: &InputValue<DefaultScalarValue>) -> Result<Self, Self::Error> {
        Ok(Node)
    }
}

/// Parses BigInt/Decimal literals without losing digits: integers beyond 32 bits and
/// decimals are kept as their text.
pub struct LooseNumber;

impl FromInputValue<DefaultScalarValue> for LooseNumber {
    type Error = FieldError<DefaultScalarValue>;
    fn from_input_value(v: &InputValue<DefaultScalarValue>) -> Result<Self, Self::Error> {
        match v {
            InputValue::Scalar(
                DefaultScalarValue::Int(_)
                | DefaultScalarValue::Float(_)
                | DefaultScalarValue::String(_),
            ) => Ok(LooseNumber),
            _ => Err(FieldError::new(
                "expected a number or a numeric string",
                Value::null(),
            )),
        }
    }
}

impl ParseScalarValue<DefaultScalarValue> for LooseNumber {
    fn from_str(value: ScalarToken<'_>) -> ParseScalarResult<DefaultScalarValue> {
        match value {
            ScalarToken::Int(s) => Ok(s
                .parse::<i32>()
                .map(DefaultScalarValue::Int)
                .unwrap_or_else(|_| DefaultScalarValue::String(s.to_owned()))),
            ScalarToken::Float(s) => Ok(DefaultScalarValue::String(s.to_owned())),
            ScalarToken::String(_) => {
                <String as ParseScalarValue<DefaultScalarValue>>::from_str(value)
            }
        }
    }
}

fn out_field(
    reg: &mut Registry<DefaultScalarValue>,
    name: &str,
    ty: &TypeRef,
    info: &Info,
) -> Field<DefaultScalarValue> {
    let info = info.for_ref(ty);
    let name = name.to_owned();
    match (ty.list, ty.nullable, ty.item_nullable) {
        (false, true, _) => reg.field::<Option<Node>>(name, &info),
        (false, false, _) => reg.field::<Node>(name, &info),
        (true, true, true) => reg.field::<Option<Vec<Option<Node>>>>(name, &info),
        (true, true, false) => reg.field::<Option<Vec<Node>>>(name, &info),
        (true, false, true) => reg.field::<Vec<Option<Node>>>(name, &info),
        (true, false, false) => reg.field::<Vec<Node>>(name, &info),
    }
}

fn in_arg(
    reg: &mut Registry<DefaultScalarValue>,
    name: &str,
    ty: &TypeRef,
    info: &Info,
) -> Argument<DefaultScalarValue> {
    let target = info.for_ref(ty);
    let name = name.to_owned();
    match (ty.list, ty.nullable, ty.item_nullable) {
        (false, true, _) => reg.arg::<Option<Node>>(name, &target),
        (false, false, _) => reg.arg::<Node>(name, &target),
        (true, true, true) => reg.arg::<Option<Vec<Option<Node>>>>(name, &target),
        (true, true, false) => reg.arg::<Option<Vec<Node>>>(name, &target),
        (true, false, true) => reg.arg::<Vec<Option<Node>>>(name, &target),
        (true, false, false) => reg.arg::<Vec<Node>>(name, &target),
    }
}

fn json_to_input(ty: &TypeRef, v: &serde_json::Value) -> InputValue<DefaultScalarValue> {
    use serde_json::Value as J;
    match v {
        J::Null => InputValue::null(),
        J::Bool(b) => InputValue::scalar(*b),
        J::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) if !matches!(ty.kind, NamedKind::Scalar(ScalarKind::Float)) => {
                InputValue::scalar(i)
            }
            _ => InputValue::scalar(n.as_f64().unwrap_or_default()),
        },
        J::String(s) if ty.kind == NamedKind::Enum => InputValue::enum_value(s),
        J::String(s) => InputValue::scalar(s.clone()),
        J::Array(items) => {
            let item = TypeRef {
                list: false,
                ..ty.clone()
            };
            InputValue::list(items.iter().map(|i| json_to_input(&item, i)).collect())
        }
        J::Object(map) => InputValue::parsed_object(
            map.iter()
                .map(|(k, v)| {
                    (
                        juniper::Spanning::unlocated(k.clone()),
                        juniper::Spanning::unlocated(json_to_input(ty, v)),
                    )
                })
                .collect(),
        ),
    }
}

fn arg_def(
    reg: &mut Registry<DefaultScalarValue>,
    a: &ArgDef,
    info: &Info,
) -> Argument<DefaultScalarValue> {
    let mut arg = in_arg(reg, &a.name, &a.ty, info);
    if let Some(d) = &a.default {
        arg = arg.default_value(json_to_input(&a.ty, d));
    }
    if let Some(d) = &a.description {
        arg = arg.description(d.clone());
    }
    arg
}

fn nullable(name: &str, kind: NamedKind) -> TypeRef {
    TypeRef {
        name: name.to_owned(),
        kind,
        nullable: true,
        list: false,
        item_nullable: false,
    }
}

fn scalar_meta(s: ScalarKind) -> ScalarMeta<DefaultScalarValue> {
    let name = s.name();
    match s {
        ScalarKind::Int => ScalarMeta::new::<i32>(name),
        ScalarKind::Float => ScalarMeta::new::<f64>(name),
        ScalarKind::Boolean => ScalarMeta::new::<bool>(name),
        ScalarKind::Id => ScalarMeta::new::<juniper::ID>(name),
        ScalarKind::String => ScalarMeta::new::<String>(name),
        ScalarKind::BigInt => ScalarMeta::new::<LooseNumber>(name)
            .description("A 64-bit integer; as a string or a number."),
        ScalarKind::Decimal => ScalarMeta::new::<LooseNumber>(name)
            .description("An arbitrary-precision decimal; as a string or a number."),
        ScalarKind::DateTime => ScalarMeta::new::<String>(name)
            .description("An RFC 3339 date-time, e.g. 2024-01-31T12:00:00Z.")
            .specified_by_url("https://datatracker.ietf.org/doc/html/rfc3339"),
        ScalarKind::Date => {
            ScalarMeta::new::<String>(name).description("A calendar date, YYYY-MM-DD.")
        }
        ScalarKind::Time => ScalarMeta::new::<String>(name).description("A time of day, HH:MM:SS."),
        ScalarKind::Uuid => ScalarMeta::new::<String>(name)
            .description("A UUID.")
            .specified_by_url("https://datatracker.ietf.org/doc/html/rfc4122"),
        ScalarKind::Json => ScalarMeta::new::<String>(name)
            .description("Any JSON value (output only; as input, a string)."),
    }
}

impl GraphQLType<DefaultScalarValue> for Node {
    fn name(info: &Info) -> Option<ArcStr> {
        Some(info.name.clone())
    }

    fn meta(info: &Info, reg: &mut Registry<DefaultScalarValue>) -> MetaType<DefaultScalarValue> {
        let schema = Arc::clone(&info.schema);
        match &info.kind {
            Kind::Query => {
                let mut fields = Vec::new();
                for q in &schema.queries {
                    let ty = TypeRef {
                        name: q.return_type.clone(),
                        kind: NamedKind::Object,
                        nullable: q.nullable,
                        list: q.returns_list,
                        item_nullable: false,
                    };
                    let mut f = out_field(reg, &q.name, &ty, info);
                    for a in &q.arguments {
                        f = f.argument(arg_def(reg, &a.arg, info));
                    }
                    if let Some(d) = &q.description {
                        f = f.description(d.clone());
                    }
                    fields.push(f);
                }
                reg.build_object_type::<Node>(info, &fields).into_meta()
            }
            Kind::Mutation => {
                let mut fields = Vec::new();
                for m in &schema.mutations {
                    let ty = TypeRef {
                        name: m.return_type.clone(),
                        kind: NamedKind::Object,
                        nullable: m.nullable,
                        list: m.returns_list,
                        item_nullable: false,
                    };
                    let mut f = out_field(reg, &m.name, &ty, info);
                    for a in &m.arguments {
                        f = f.argument(arg_def(reg, a, info));
                    }
                    if let Some(d) = &m.description {
                        f = f.description(d.clone());
                    }
                    fields.push(f);
                }
                reg.build_object_type::<Node>(info, &fields).into_meta()
            }
            Kind::NoMutation => reg.build_object_type::<Node>(info, &[]).into_meta(),
            Kind::Object => {
                let Some(t) = schema.object(&info.name) else {
                    return reg.build_object_type::<Node>(info, &[]).into_meta();
                };
                let fields: Vec<_> = t
                    .fields
                    .iter()
                    .map(|f| {
                        let mut field = out_field(reg, &f.name, &f.ty, info);
                        if let Some(d) = &f.description {
                            field = field.description(d.clone());
                        }
                        field
                    })
                    .collect();
                let mut meta = reg.build_object_type::<Node>(info, &fields);
                if let Some(d) = &t.description {
                    meta = meta.description(d.clone());
                }
                meta.into_meta()
            }
            Kind::Enum => {
                let values: Vec<EnumValue> = schema
                    .enum_type(&info.name)
                    .map(|e| {
                        e.values
                            .iter()
                            .map(|v| {
                                let mut ev = EnumValue::new(v.name.clone());
                                if let Some(d) = &v.description {
                                    ev = ev.description(d.clone());
                                }
                                ev
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut meta = reg.build_enum_type::<Node>(info, &values);
                if let Some(d) = schema
                    .enum_type(&info.name)
                    .and_then(|e| e.description.clone())
                {
                    meta = meta.description(d);
                }
                meta.into_meta()
            }
            Kind::Input => {
                let args: Vec<_> = schema
                    .input_type(&info.name)
                    .map(|t| t.fields.iter().map(|a| arg_def(reg, a, info)).collect())
                    .unwrap_or_default();
                let mut meta = reg.build_input_object_type::<Node>(info, &args);
                if let Some(d) = schema
                    .input_type(&info.name)
                    .and_then(|t| t.description.clone())
                {
                    meta = meta.description(d);
                }
                meta.into_meta()
            }
            Kind::Where => {
                let mut args = Vec::new();
                if let Some(w) = schema.where_input(&info.name) {
                    for f in &w.fields {
                        let target = match &f.target {
                            crate::schema::WhereTarget::Filter { filter }
                            | crate::schema::WhereTarget::ScalarList { filter } => filter,
                            crate::schema::WhereTarget::Object { where_input }
                            | crate::schema::WhereTarget::List { where_input } => where_input,
                        };
                        args.push(in_arg(
                            reg,
                            &f.name,
                            &nullable(target, NamedKind::Input),
                            info,
                        ));
                    }
                    let list = TypeRef {
                        list: true,
                        ..nullable(&w.name, NamedKind::Input)
                    };
                    args.push(in_arg(reg, "_and", &list, info).description("All of these match."));
                    args.push(
                        in_arg(reg, "_or", &list, info)
                            .description("At least one of these matches."),
                    );
                    args.push(
                        in_arg(reg, "_not", &nullable(&w.name, NamedKind::Input), info)
                            .description("This does not match."),
                    );
                }
                reg.build_input_object_type::<Node>(info, &args)
                    .description(format!(
                        "Filter on {}: every given field must match.",
                        info.name.trim_end_matches("WhereInput")
                    ))
                    .into_meta()
            }
            Kind::Order => {
                let mut args = Vec::new();
                if let Some(o) = schema.order_input(&info.name) {
                    for f in &o.fields {
                        args.push(in_arg(
                            reg,
                            &f.name,
                            &nullable("OrderDirection", NamedKind::Enum),
                            info,
                        ));
                    }
                }
                reg.build_input_object_type::<Node>(info, &args).into_meta()
            }
            Kind::Filter => {
                let mut args = Vec::new();
                if let Some(f) = schema.filter(&info.name) {
                    let value_ty = match (&f.scalar, &f.enum_name) {
                        (_, Some(e)) => nullable(e, NamedKind::Enum),
                        (Some(s), None) => nullable(s.name(), NamedKind::Scalar(*s)),
                        (None, None) => nullable("String", NamedKind::Scalar(ScalarKind::String)),
                    };
                    for op in &f.operators {
                        let ty = match op {
                            Operator::In | Operator::Nin => TypeRef {
                                list: true,
                                ..value_ty.clone()
                            },
                            Operator::Isnull => {
                                nullable("Boolean", NamedKind::Scalar(ScalarKind::Boolean))
                            }
                            Operator::Contains
                            | Operator::Icontains
                            | Operator::Startswith
                            | Operator::Istartswith
                            | Operator::Endswith
                            | Operator::Iendswith
                            | Operator::Like
                            | Operator::Ilike => {
                                nullable("String", NamedKind::Scalar(ScalarKind::String))
                            }
                            _ => value_ty.clone(),
                        };
                        args.push(in_arg(reg, op.name(), &ty, info));
                    }
                }
                reg.build_input_object_type::<Node>(info, &args).into_meta()
            }
            Kind::Scalar(s) => scalar_meta(*s).into_meta(),
        }
    }
}

impl GraphQLValue<DefaultScalarValue> for Node {
    type Context = PlanCtx;
    type TypeInfo = Info;

    fn type_name(&self, info: &Info) -> Option<ArcStr> {
        Some(info.name.clone())
    }

    fn concrete_type_name(&self, _: &PlanCtx, info: &Info) -> String {
        info.name.to_string()
    }

    fn resolve_field(
        &self,
        info: &Info,
        field_name: &str,
        args: &Arguments<DefaultScalarValue>,
        executor: &Executor<PlanCtx, DefaultScalarValue>,
    ) -> ExecutionResult<DefaultScalarValue> {
        match info.kind {
            Kind::Query => plan::plan_query(info, field_name, args, executor),
            Kind::Mutation => plan::plan_mutation(info, field_name, args, executor),
            _ => Err(FieldError::new(
                "field resolved outside the planner",
                Value::null(),
            )),
        }
    }
}
