//! Mutations: look up the `fn_*` function's signature, build the call (the input as one
//! `jsonb`, or flattened named arguments when the function declares them) with the selection
//! applied to the returned `entity`, and run it in one transaction that also writes the
//! change-log row.

use serde_json::{Map, Number, Value};

use crate::schema::{ArgDef, CompiledSchema, MutationField, NamedKind, ScalarKind, TypeRef};

use super::filter::value_text;
use super::select::{Selection, object_json};
use super::{ArgValue, Builder, Param, SqlError, Statement, quote_ident, quote_qualified};

/// The declared parameters of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct FnSignature {
    /// `(name, type)`; names are empty for unnamed parameters.
    pub params: Vec<(String, String)>,
}

impl FnSignature {
    /// True when the function takes the whole input as one `jsonb`/`json` value.
    pub fn takes_json_input(&self) -> bool {
        self.params.len() == 1 && matches!(self.params[0].1.as_str(), "jsonb" | "json")
    }
}

/// SQL that finds a function's parameters: `$1` = schema (or NULL), `$2` = name.
pub const SIGNATURE_SQL: &str = "SELECT coalesce(p.proargnames[1:p.pronargs], array_fill(''::text, ARRAY[p.pronargs])), \
     ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i) ORDER BY i) \
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.proname = $2::text AND (($1::text IS NULL AND pg_function_is_visible(p.oid)) OR n.nspname = $1::text) \
     ORDER BY p.pronargs";

/// Splits `schema.fn` into `(Some(schema), fn)`.
pub fn split_name(name: &str) -> (Option<&str>, &str) {
    match name.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, name),
    }
}

/// Converts an argument value to JSON for the function: input-object keys become the
/// snake_case keys of the schema, enum names become their stored values, custom scalars are
/// validated.
pub fn to_json(
    schema: &CompiledSchema,
    ty: &TypeRef,
    v: &ArgValue,
    what: &str,
    depth: usize,
) -> Result<Value, SqlError> {
    if depth > 64 {
        return Err(SqlError::LimitExceeded(format!(
            "{what}: input nested too deeply"
        )));
    }
    if matches!(v, ArgValue::Null) {
        return Ok(Value::Null);
    }
    if let ArgValue::String(s) = v
        && s.contains('\0')
    {
        return Err(SqlError::BadInput(format!(
            "{what}: strings cannot contain NUL characters"
        )));
    }
    if ty.list
        && let ArgValue::List(items) = v
    {
        let item_ty = TypeRef {
            list: false,
            nullable: ty.item_nullable,
            ..ty.clone()
        };
        return items
            .iter()
            .map(|i| to_json(schema, &item_ty, i, what, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    match ty.kind {
        NamedKind::Input => {
            let ArgValue::Object(fields) = v else {
                return Err(SqlError::BadInput(format!(
                    "{what}: expected {}, found {}",
                    ty.name,
                    v.kind()
                )));
            };
            let input = schema.input_type(&ty.name);
            let mut map = Map::new();
            for (name, value) in fields {
                let def: Option<&ArgDef> =
                    input.and_then(|i| i.fields.iter().find(|f| &f.name == name));
                match def {
                    Some(def) => {
                        let inner_what = format!("{what}.{name}");
                        map.insert(
                            def.key.clone(),
                            to_json(schema, &def.ty, value, &inner_what, depth + 1)?,
                        );
                    }
                    None => {
                        return Err(SqlError::BadInput(format!(
                            "{what}: unknown field `{}`",
                            super::filter::truncate(name)
                        )));
                    }
                }
            }
            Ok(Value::Object(map))
        }
        NamedKind::Enum => Ok(Value::String(value_text(
            schema,
            None,
            Some(&ty.name),
            what,
            v,
        )?)),
        NamedKind::Scalar(s) => scalar_json(schema, s, v, what),
        NamedKind::Object => Err(SqlError::BadInput(format!("{what}: not an input type"))),
    }
}

fn scalar_json(
    schema: &CompiledSchema,
    s: ScalarKind,
    v: &ArgValue,
    what: &str,
) -> Result<Value, SqlError> {
    Ok(match (s, v) {
        (ScalarKind::Int, ArgValue::Int(i)) => Value::Number((*i).into()),
        (ScalarKind::BigInt, ArgValue::Int(i)) => Value::Number((*i).into()),
        (ScalarKind::Float | ScalarKind::Decimal, ArgValue::Int(i)) => Value::Number((*i).into()),
        (ScalarKind::BigInt, ArgValue::Float(f))
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 =>
        {
            Value::Number((*f as i64).into())
        }
        (ScalarKind::Float | ScalarKind::Decimal | ScalarKind::BigInt, ArgValue::Float(f)) => {
            Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| SqlError::BadInput(format!("{what}: not a finite number")))?
        }
        (ScalarKind::Boolean, ArgValue::Boolean(b)) => Value::Bool(*b),
        (ScalarKind::Json, ArgValue::String(t)) => Value::String(t.clone()),
        (ScalarKind::Id | ScalarKind::String, ArgValue::String(t)) => Value::String(t.clone()),
        (ScalarKind::Id, ArgValue::Int(i)) => Value::String(i.to_string()),
        _ => Value::String(value_text(schema, Some(s), None, what, v)?),
    })
}

/// The `jsonb` input passed to a function taking one: the single input-object argument, or
/// an object of all arguments by snake_case key.
pub fn input_json(
    schema: &CompiledSchema,
    m: &MutationField,
    args: &[(String, ArgValue)],
) -> Result<Value, SqlError> {
    let get = |name: &str| {
        args.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or(&ArgValue::Null)
    };
    if m.arguments.len() == 1
        && m.arguments[0].ty.kind == NamedKind::Input
        && !m.arguments[0].ty.list
    {
        let a = &m.arguments[0];
        return to_json(
            schema,
            &a.ty,
            get(&a.name),
            &format!("argument `{}`", a.name),
            0,
        );
    }
    let mut map = Map::new();
    for a in &m.arguments {
        map.insert(
            a.key.clone(),
            to_json(
                schema,
                &a.ty,
                get(&a.name),
                &format!("argument `{}`", a.name),
                0,
            )?,
        );
    }
    Ok(Value::Object(map))
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Builds the call statement. Columns: succeeded, state_changed, error_class, message,
/// entity_id, entity_type, entity, updated_fields, and the selection as JSON text.
///
/// `injected` are the mutation's `inject_params` values from the token: each is written
/// into the input under its key, replacing whatever the client sent there.
pub fn build_call(
    schema: &CompiledSchema,
    m: &MutationField,
    sig: &FnSignature,
    args: &[(String, ArgValue)],
    injected: &[(String, Value)],
    sel: Option<&Selection>,
) -> Result<Statement, SqlError> {
    let mut b = Builder::default();
    let mut input = input_json(schema, m, args)?;
    if !injected.is_empty() {
        if matches!(input, Value::Null) {
            input = Value::Object(Map::new());
        }
        let Value::Object(map) = &mut input else {
            return Err(SqlError::BadInput(format!(
                "`{}`: the injected parameters need an object input",
                m.name
            )));
        };
        for (k, v) in injected {
            map.insert(k.clone(), v.clone());
        }
    }
    let call_args = if sig.takes_json_input() {
        let p = b.param(Param::Json(input));
        if sig.params[0].1 == "json" {
            format!("{p}::json")
        } else {
            p
        }
    } else {
        let obj = match &input {
            Value::Object(o) => o.clone(),
            _ => Map::new(),
        };
        let mut parts = Vec::new();
        for (i, (pname, ptype)) in sig.params.iter().enumerate() {
            let value = if pname.is_empty() {
                m.arguments.get(i).and_then(|a| obj.get(&a.key)).cloned()
            } else {
                let bare = pname
                    .strip_prefix("p_")
                    .or_else(|| pname.strip_prefix("in_"))
                    .or_else(|| pname.strip_prefix('_'))
                    .unwrap_or(pname);
                obj.get(pname.as_str()).or_else(|| obj.get(bare)).cloned()
            };
            let placeholder = match ptype.as_str() {
                "jsonb" => b.param(Param::Json(value.unwrap_or(Value::Null))),
                _ => {
                    let p = b.param(Param::Text(value.as_ref().and_then(text_of)));
                    format!("{p}::{ptype}")
                }
            };
            if pname.is_empty() {
                parts.push(placeholder);
            } else {
                parts.push(format!("{} => {placeholder}", quote_ident(pname)));
            }
        }
        parts.join(", ")
    };
    let entity = "r.\"entity\"";
    let json = match sel {
        None => "NULL::text".to_owned(),
        Some(sel) if m.returns_list => {
            let alias = b.alias("e");
            let obj = object_json(&mut b, schema, sel, &format!("{alias}.v"));
            format!(
                "CASE WHEN jsonb_typeof({entity}) = 'array' THEN (SELECT coalesce(json_agg({obj}), '[]'::json) FROM jsonb_array_elements({entity}) {alias}(v))::text END"
            )
        }
        Some(sel) => {
            let obj = object_json(&mut b, schema, sel, entity);
            format!("CASE WHEN jsonb_typeof({entity}) = 'object' THEN ({obj})::text END")
        }
    };
    let sql = format!(
        "SELECT r.succeeded, r.state_changed, r.error_class, r.message, r.entity_id, r.entity_type, r.entity, r.updated_fields, {json} FROM {}({call_args}) r",
        quote_qualified(&m.function)
    );
    Ok(Statement {
        sql,
        params: b.params,
        notes: b.notes,
    })
}

/// The mutation's entity event, inside the mutation's transaction: the row events the
/// tracking trigger logged for the entity in this transaction get the mutation's
/// annotation (`$6`); when there are none (the entity's table is not tracked), one row is
/// written with what the function returned. Either way each row change is logged once.
pub const CHANGE_LOG_SQL: &str = "WITH annotated AS ( \
       UPDATE fraiseql.tb_entity_change_log SET mutation = $6::jsonb \
        WHERE txid = pg_current_xact_id() AND entity = $1::text AND entity_id = $2::uuid \
       RETURNING pk) \
     INSERT INTO fraiseql.tb_entity_change_log \
     (entity, entity_id, op, after, changed_fields, mutation, actor, tenant_id, trace_id) \
     SELECT $1::text, $2::uuid, $3::text, $4::jsonb, $5::text[], $6::jsonb, \
      coalesce(nullif(current_setting('fraiseql.actor', true), ''), current_user::text), \
      nullif(current_setting('fraiseql.tenant_id', true), ''), \
      nullif(current_setting('fraiseql.trace_id', true), '') \
     WHERE NOT EXISTS (SELECT 1 FROM annotated)";
