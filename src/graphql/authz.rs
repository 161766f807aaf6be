//! Introspection per role: the schema juniper introspects is built once per engine, so the
//! answer is filtered after juniper produced it. Types whose `requires_role` the identity
//! lacks disappear, with their generated `<Type>WhereInput` / `<Type>OrderBy`, and so do the
//! fields, arguments and input fields that reference them (root fields returning them
//! included). `__type(name: …)` of a hidden type answers null when the selection includes
//! `name`, or `fields { name }` matching the hidden type's fields.
//!
//! At this point the juniper value holds only introspection results: root fields served
//! from SQL are still placeholders (their JSON is spliced in later), so the whole value can
//! be walked.

use std::collections::{HashMap, HashSet};

use juniper::{DefaultScalarValue, Value};

use crate::schema::CompiledSchema;

use super::plan::PlanCtx;

type V = Value<DefaultScalarValue>;

/// What the identity may not see.
struct Hidden {
    /// Type names (object types and their generated inputs).
    types: HashSet<String>,
    /// Field names to drop per parent type name.
    fields: HashMap<String, HashSet<String>>,
    /// Every field name in `fields`, for field lists whose parent type is not selected.
    any_field: HashSet<String>,
    /// The field names of each hidden object type, to recognise a `__type` answer that
    /// does not select `name`.
    shapes: Vec<HashSet<String>>,
}

fn hidden(schema: &CompiledSchema, ctx: &PlanCtx) -> Option<Hidden> {
    let mut types = HashSet::new();
    for t in schema.types.iter().filter(|t| !ctx.may_read(t)) {
        types.insert(t.name.clone());
        types.insert(t.where_input.clone());
        types.insert(t.order_input.clone());
    }
    if types.is_empty() {
        return None;
    }
    let mut fields: HashMap<String, HashSet<String>> = HashMap::new();
    let mut add = |parent: &str, field: &str| {
        fields
            .entry(parent.to_owned())
            .or_default()
            .insert(field.to_owned());
    };
    for q in schema
        .queries
        .iter()
        .filter(|q| types.contains(&q.return_type))
    {
        add("Query", &q.name);
    }
    for m in schema
        .mutations
        .iter()
        .filter(|m| types.contains(&m.return_type))
    {
        add("Mutation", &m.name);
    }
    for t in &schema.types {
        for f in t.fields.iter().filter(|f| types.contains(&f.ty.name)) {
            add(&t.name, &f.name);
        }
    }
    let any_field = fields.values().flatten().cloned().collect();
    let shapes = schema
        .types
        .iter()
        .filter(|t| types.contains(&t.name))
        .map(|t| t.fields.iter().map(|f| f.name.clone()).collect())
        .collect();
    Some(Hidden {
        types,
        fields,
        any_field,
        shapes,
    })
}

fn string_field<'a>(v: &'a V, key: &str) -> Option<&'a str> {
    v.as_object_value()?
        .get_field_value(key)?
        .as_scalar()
        .and_then(|s| match s {
            DefaultScalarValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

/// The named type at the end of a `type { ofType { … } }` chain, when selected.
fn type_ref_name(v: &V) -> Option<&str> {
    let mut t = v.as_object_value()?.get_field_value("type")?;
    for _ in 0..16 {
        if let Some(n) = string_field(t, "name") {
            return Some(n);
        }
        t = t.as_object_value()?.get_field_value("ofType")?;
    }
    None
}

/// Filters the introspection parts of `data` for the identity of `ctx`.
pub fn filter_introspection(schema: &CompiledSchema, ctx: &PlanCtx, data: &mut V) {
    let Some(h) = hidden(schema, ctx) else {
        return;
    };
    walk(&h, data, None, 0);
}

/// `parent`: the type name of the object holding `v` (for a `fields` list), when known.
fn walk(h: &Hidden, v: &mut V, parent: Option<&str>, depth: usize) {
    if depth > 64 {
        return;
    }
    let Some(obj) = v.as_mut_object_value() else {
        return;
    };
    let own_name = obj
        .get_field_value("name")
        .and_then(|n| n.as_scalar())
        .and_then(|s| match s {
            DefaultScalarValue::String(s) => Some(s.clone()),
            _ => None,
        });
    for (key, child) in obj.iter_mut() {
        let child_parent = match key.as_str() {
            "queryType" => Some("Query".to_owned()),
            "mutationType" => Some("Mutation".to_owned()),
            _ => None,
        };
        match child {
            Value::List(items) => {
                let list_parent = own_name.as_deref().or(parent);
                items.retain(|item| keep(h, key, item, list_parent));
                for item in items.iter_mut() {
                    walk(h, item, None, depth + 1);
                }
            }
            Value::Object(_) => {
                if is_hidden_type(h, child) {
                    *child = Value::null();
                    continue;
                }
                walk(h, child, child_parent.as_deref(), depth + 1);
            }
            _ => {}
        }
    }
}

/// True for a `__Type` answer of a hidden type: by its `name` when selected, else by its
/// `fields` names matching a hidden object type's exactly.
fn is_hidden_type(h: &Hidden, v: &V) -> bool {
    let Some(o) = v.as_object_value() else {
        return false;
    };
    if let Some(n) = string_field(v, "name") {
        return h.types.contains(n)
            && (o.contains_field("kind")
                || o.contains_field("fields")
                || o.contains_field("inputFields"));
    }
    let Some(fields) = o.get_field_value("fields").and_then(|f| f.as_list_value()) else {
        return false;
    };
    let names: HashSet<String> = fields
        .iter()
        .filter_map(|f| string_field(f, "name").map(str::to_owned))
        .collect();
    !names.is_empty() && h.shapes.contains(&names)
}

/// Whether a list element of list `key` stays.
fn keep(h: &Hidden, key: &str, item: &V, parent: Option<&str>) -> bool {
    let name = string_field(item, "name");
    if key == "types" || key == "possibleTypes" || key == "interfaces" {
        return !name.is_some_and(|n| h.types.contains(n));
    }
    if type_ref_name(item).is_some_and(|n| h.types.contains(n)) {
        return false;
    }
    if key == "fields"
        && let Some(n) = name
    {
        return match parent {
            Some(p) => !h.fields.get(p).is_some_and(|f| f.contains(n)),
            None => !h.any_field.contains(n),
        };
    }
    true
}
