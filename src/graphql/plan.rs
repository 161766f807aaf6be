//! Planning: each root field that juniper dispatches is turned into an owned plan (its
//! arguments with variables and defaults applied, and the look-ahead selection merged by
//! response key and checked against the limits). No database work happens here; juniper
//! gets a placeholder value and the SQL runs after juniper returns.
//!
//! The schema's authorization rules are applied here, against the request's identity: a
//! root field returning a type of another role, or outside its `requires_actor`, or whose
//! `inject_params` claim is missing, is a `FORBIDDEN` field error and gets no plan (so no
//! SQL); nested fields the identity may not read become [`SelItem::Withheld`] (null, or
//! with `reject` an error at each path, placed by the response layer).

use std::sync::Arc;
use std::sync::Mutex;

use juniper::{
    Arguments, DefaultScalarValue, ExecutionResult, Executor, FieldError, InputValue,
    LookAheadChildren, LookAheadSelection, Object, Value,
};

use crate::auth::Door;
use crate::error_code::ErrorCode;
use crate::schema::{CompiledSchema, InjectParam, NamedKind, ObjectType, OnDeny};
use crate::sql::ArgValue;
use crate::sql::select::{SelItem, Selection};

use super::Limits;
use super::types::Info;

/// Root field kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    Query,
    Mutation,
}

/// One planned root field.
#[derive(Debug, Clone)]
pub struct RootPlan {
    /// Response key (alias or name).
    pub key: String,
    /// The schema field name.
    pub field: String,
    pub kind: PlanKind,
    pub args: Vec<(String, ArgValue)>,
    pub selection: Selection,
    /// 1-based line and column of the field in the document.
    pub location: (usize, usize),
    /// The field's `inject_params` with the token's claim values (param, value).
    pub injected: Vec<(String, serde_json::Value)>,
}

impl RootPlan {
    /// The injected values as row filters, each on the view's column when `columns` (the
    /// view's column names and types, when known) has it, else on the `data` key.
    pub fn injected_filters(
        &self,
        columns: Option<&std::collections::HashMap<String, String>>,
    ) -> Vec<crate::sql::select::InjectedFilter> {
        use crate::sql::select::{InjectTarget, InjectedFilter};
        self.injected
            .iter()
            .map(|(k, v)| InjectedFilter {
                param: k.clone(),
                value: match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                target: match columns {
                    None => InjectTarget::Unknown,
                    Some(c) => c
                        .get(k)
                        .map_or(InjectTarget::DataKey, |ty| InjectTarget::Column(ty.clone())),
                },
            })
            .collect()
    }
}

/// Per-request context juniper hands to the root resolvers.
pub struct PlanCtx {
    pub schema: Arc<CompiledSchema>,
    pub limits: Limits,
    pub plans: Mutex<Vec<RootPlan>>,
    /// A limit broken while planning: the whole request fails with this message.
    pub limit_error: Mutex<Option<String>>,
    aliases: Mutex<usize>,
    /// Who asks: the schema's role, scope and actor rules and injected claims are planned
    /// against it.
    pub identity: crate::auth::Identity,
    /// The door the request came through, for the refusal metric.
    pub door: Door,
}

impl PlanCtx {
    pub fn new(
        schema: Arc<CompiledSchema>,
        limits: Limits,
        identity: crate::auth::Identity,
        door: Door,
    ) -> PlanCtx {
        PlanCtx {
            identity,
            door,
            schema,
            limits,
            plans: Mutex::new(Vec::new()),
            limit_error: Mutex::new(None),
            aliases: Mutex::new(0),
        }
    }

    fn fail_limit(&self, msg: String) {
        let mut slot = self.limit_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(msg);
        }
    }

    /// Counts one refusal in `auth_denied_total{door, role}`. The role label is a role the
    /// schema names in a `requires_role` or one of the configured `auth.db_roles`, or
    /// `anon`, else `other`: claim values chosen by token issuers never become label values.
    fn count_denied(&self) {
        let role = self.identity.role();
        let label = if self.identity.is_anonymous() {
            "anon"
        } else if self.identity.is_db_role()
            || !role.is_empty()
                && self
                    .schema
                    .types
                    .iter()
                    .any(|t| t.requires_role.as_deref() == Some(role))
        {
            role
        } else {
            "other"
        };
        let door = match self.door {
            Door::Http => "http",
            Door::Flight => "flight",
        };
        crate::metrics::metrics()
            .auth
            .denied
            .with_label_values(&[door, label])
            .inc();
    }

    /// True when the identity may read objects of `object` (its `requires_role`).
    pub fn may_read(&self, object: &ObjectType) -> bool {
        object
            .requires_role
            .as_deref()
            .is_none_or(|r| self.identity.has_role(r))
    }

    /// The root field's `requires_actor` and `inject_params` checked against the identity:
    /// the injected values, or the refusal.
    fn root_rules(
        &self,
        field: &str,
        requires_actor: &[String],
        inject: &[InjectParam],
    ) -> Result<Vec<(String, serde_json::Value)>, FieldError<DefaultScalarValue>> {
        if !requires_actor.is_empty()
            && !self.identity.is_unrestricted()
            && !self
                .identity
                .actor()
                .is_some_and(|a| requires_actor.iter().any(|r| r == a))
        {
            self.count_denied();
            return Err(field_error(
                format!("`{field}` is not available to this actor type"),
                ErrorCode::Forbidden,
            ));
        }
        let mut out = Vec::with_capacity(inject.len());
        for inj in inject {
            // Also for an unrestricted identity (no [auth], a service token): there is no
            // claim to filter with, and running unfiltered would return every tenant's rows.
            let value = match self.identity.claim(&inj.claim) {
                Some(
                    v @ (serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)),
                ) => v.clone(),
                None | Some(serde_json::Value::Null) if inj.optional => serde_json::Value::Null,
                _ => {
                    self.count_denied();
                    return Err(field_error(
                        format!(
                            "`{field}` needs the token's claim `{}` (absent, or not a string, number or boolean)",
                            inj.claim
                        ),
                        ErrorCode::Forbidden,
                    ));
                }
            };
            out.push((inj.param.clone(), value));
        }
        Ok(out)
    }

    fn count_alias(&self) -> bool {
        let mut n = self.aliases.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        if *n > self.limits.max_aliases {
            self.fail_limit(format!(
                "the operation uses more than {} aliases",
                self.limits.max_aliases
            ));
            return false;
        }
        true
    }
}

/// A field error with `extensions.code`.
pub fn field_error(
    message: impl std::fmt::Display,
    code: ErrorCode,
) -> FieldError<DefaultScalarValue> {
    let mut ext = Object::with_capacity(1);
    ext.add_field("code", Value::scalar(code.as_str().to_owned()));
    FieldError::new(message, Value::Object(ext))
}

/// juniper input value → [`ArgValue`].
pub fn to_arg_value(v: &InputValue<DefaultScalarValue>) -> ArgValue {
    match v {
        InputValue::Null | InputValue::Variable(_) => ArgValue::Null,
        InputValue::Scalar(s) => match s {
            DefaultScalarValue::Int(i) => ArgValue::Int(i64::from(*i)),
            DefaultScalarValue::Float(f) => ArgValue::Float(*f),
            DefaultScalarValue::String(s) => ArgValue::String(s.clone()),
            DefaultScalarValue::Boolean(b) => ArgValue::Boolean(*b),
        },
        InputValue::Enum(e) => ArgValue::Enum(e.clone()),
        InputValue::List(items) => {
            ArgValue::List(items.iter().map(|i| to_arg_value(&i.item)).collect())
        }
        InputValue::Object(fields) => ArgValue::Object(
            fields
                .iter()
                .map(|(k, v)| (k.item.clone(), to_arg_value(&v.item)))
                .collect(),
        ),
    }
}

fn merge(into: &mut Selection, other: Selection) {
    for item in other.items {
        match into.items.iter_mut().find(|i| i.key() == item.key()) {
            None => into.items.push(item),
            Some(existing) => {
                if let (SelItem::Field { sub: Some(a), .. }, SelItem::Field { sub: Some(b), .. }) =
                    (existing, item)
                {
                    merge(a, b);
                }
            }
        }
    }
}

/// Builds the selection of an object from look-ahead children (fragments already flattened
/// and `@skip`/`@include` applied by juniper), merging fields with the same response key.
fn build_selection(
    ctx: &PlanCtx,
    object: &ObjectType,
    children: &LookAheadChildren<'_, DefaultScalarValue>,
    depth: usize,
) -> Result<Selection, ()> {
    if depth > ctx.limits.max_depth {
        ctx.fail_limit(format!(
            "the operation is nested deeper than {} levels",
            ctx.limits.max_depth
        ));
        return Err(());
    }
    let mut sel = Selection {
        type_name: object.name.clone(),
        items: Vec::with_capacity(children.len()),
    };
    for child in children.iter() {
        if let Some(t) = child.applies_for()
            && t != object.name
        {
            continue;
        }
        let item = build_item(ctx, object, child, depth)?;
        if let Some(item) = item {
            merge(
                &mut sel,
                Selection {
                    type_name: object.name.clone(),
                    items: vec![item],
                },
            );
        }
    }
    Ok(sel)
}

fn build_item(
    ctx: &PlanCtx,
    object: &ObjectType,
    child: &LookAheadSelection<'_, DefaultScalarValue>,
    depth: usize,
) -> Result<Option<SelItem>, ()> {
    if child.field_alias().is_some() && !ctx.count_alias() {
        return Err(());
    }
    let key = child.field_name().to_owned();
    let name = child.field_original_name();
    if name == "__typename" {
        return Ok(Some(SelItem::Typename { key }));
    }
    let Some(field) = object.field(name) else {
        return Ok(None);
    };
    if let Some(scope) = &field.requires_scope
        && !ctx.identity.has_scope(scope)
    {
        if field.on_deny == OnDeny::Reject {
            ctx.count_denied();
        }
        return Ok(Some(SelItem::Withheld {
            key,
            field: field.clone(),
            reject: field.on_deny == OnDeny::Reject,
        }));
    }
    let sub = if field.ty.kind == NamedKind::Object {
        let Some(sub_obj) = ctx.schema.object(&field.ty.name) else {
            return Ok(None);
        };
        if !ctx.may_read(sub_obj) {
            ctx.count_denied();
            return Ok(Some(SelItem::Withheld {
                key,
                field: field.clone(),
                reject: true,
            }));
        }
        Some(build_selection(ctx, sub_obj, &child.children(), depth + 1)?)
    } else {
        None
    };
    Ok(Some(SelItem::Field {
        key,
        field: field.clone(),
        sub,
    }))
}

fn placeholder(nullable: bool, list: bool) -> Value<DefaultScalarValue> {
    if nullable {
        Value::null()
    } else if list {
        Value::list(Vec::new())
    } else {
        Value::Object(Object::with_capacity(0))
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_root(
    info: &Info,
    field_name: &str,
    arg_names: Vec<String>,
    return_type: &str,
    nullable: bool,
    list: bool,
    kind: PlanKind,
    rules: (&[String], &[InjectParam]),
    args: &Arguments<DefaultScalarValue>,
    executor: &Executor<PlanCtx, DefaultScalarValue>,
) -> ExecutionResult<DefaultScalarValue> {
    let ctx = executor.context();
    let schema = &info.schema;
    let Some(object) = schema.object(return_type) else {
        return Err(field_error(
            "unknown return type",
            ErrorCode::InternalServerError,
        ));
    };
    // Refused root fields get an error at their path and no plan, so no SQL runs for them.
    if !ctx.may_read(object) {
        ctx.count_denied();
        return Err(field_error(
            format!("not authorized to read {return_type}"),
            ErrorCode::Forbidden,
        ));
    }
    let injected = ctx.root_rules(field_name, rules.0, rules.1)?;
    let look = executor.look_ahead();
    if look.field_alias().is_some() && !ctx.count_alias() {
        return Ok(placeholder(nullable, list));
    }
    let key = look.field_name().to_owned();
    let Ok(selection) = build_selection(ctx, object, &look.children(), 1) else {
        return Ok(placeholder(nullable, list));
    };
    let args: Vec<(String, ArgValue)> = arg_names
        .into_iter()
        .filter_map(|n| {
            args.get_input_value(&n)
                .map(|v| (n.clone(), to_arg_value(&v.item)))
        })
        .collect();
    let loc = executor.location();
    let mut plans = ctx.plans.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = plans.iter_mut().find(|p| p.key == key) {
        merge(&mut existing.selection, selection);
    } else {
        if plans.len() >= ctx.limits.max_root_fields {
            drop(plans);
            ctx.fail_limit(format!(
                "the operation selects more than {} root fields",
                ctx.limits.max_root_fields
            ));
            return Ok(placeholder(nullable, list));
        }
        plans.push(RootPlan {
            key,
            field: field_name.to_owned(),
            kind,
            args,
            selection,
            location: (loc.line() + 1, loc.column() + 1),
            injected,
        });
    }
    Ok(placeholder(nullable, list))
}

/// Root query resolver.
pub fn plan_query(
    info: &Info,
    field_name: &str,
    args: &Arguments<DefaultScalarValue>,
    executor: &Executor<PlanCtx, DefaultScalarValue>,
) -> ExecutionResult<DefaultScalarValue> {
    let Some(q) = info.schema.query(field_name) else {
        return Err(field_error(
            "unknown query",
            ErrorCode::GraphqlValidationFailed,
        ));
    };
    let names = q.arguments.iter().map(|a| a.arg.name.clone()).collect();
    plan_root(
        info,
        field_name,
        names,
        &q.return_type,
        q.nullable,
        q.returns_list,
        PlanKind::Query,
        (&q.requires_actor, &q.inject),
        args,
        executor,
    )
}

/// Root mutation resolver.
pub fn plan_mutation(
    info: &Info,
    field_name: &str,
    args: &Arguments<DefaultScalarValue>,
    executor: &Executor<PlanCtx, DefaultScalarValue>,
) -> ExecutionResult<DefaultScalarValue> {
    let Some(m) = info.schema.mutation(field_name) else {
        return Err(field_error(
            "unknown mutation",
            ErrorCode::GraphqlValidationFailed,
        ));
    };
    let names = m.arguments.iter().map(|a| a.name.clone()).collect();
    plan_root(
        info,
        field_name,
        names,
        &m.return_type,
        m.nullable,
        m.returns_list,
        PlanKind::Mutation,
        (&m.requires_actor, &m.inject),
        args,
        executor,
    )
}
