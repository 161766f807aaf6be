//! The response: GraphQL errors in the spec's format (`message`, `locations`, `path` with list
//! indices, `extensions.code`), the assembly of `{"errors":[…],"data":{…}}` from juniper's
//! value and the raw JSON text of each root field, and the repair of sentinel values (null
//! in a non-null field, Int out of range, unknown enum value) with null propagation.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

pub use crate::error_code::ErrorCode;
use crate::schema::TypeRef;
use crate::sql::select::{
    SENTINEL_ENUM, SENTINEL_FORBIDDEN, SENTINEL_INT, SENTINEL_ITEM, SENTINEL_MARK, SENTINEL_NULL,
    SelItem, Selection,
};

/// One segment of an error path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

impl Serialize for PathSeg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PathSeg::Key(k) => s.serialize_str(k),
            PathSeg::Index(i) => s.serialize_u64(*i as u64),
        }
    }
}

/// The `extensions.code` of one error: one of the engine's own, or the error class a
/// mutation function reported when it is none of those (the database names it, so it is
/// open-ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Engine(ErrorCode),
    Reported(String),
}

impl Code {
    /// The code for an error class a mutation function reported; an engine code when the
    /// class spells one, so callers can match on it.
    pub fn reported(class: &str) -> Code {
        ErrorCode::parse(class).map_or_else(|| Code::Reported(class.to_owned()), Code::Engine)
    }

    /// The string sent as `extensions.code`.
    pub fn as_str(&self) -> &str {
        match self {
            Code::Engine(c) => c.as_str(),
            Code::Reported(s) => s,
        }
    }
}

impl From<ErrorCode> for Code {
    fn from(c: ErrorCode) -> Code {
        Code::Engine(c)
    }
}

impl PartialEq<ErrorCode> for Code {
    fn eq(&self, other: &ErrorCode) -> bool {
        *self == Code::Engine(*other)
    }
}

/// A GraphQL error as sent to clients.
#[derive(Debug, Clone, PartialEq)]
pub struct GqlError {
    pub message: String,
    /// 1-based `(line, column)` pairs.
    pub locations: Vec<(usize, usize)>,
    pub path: Vec<PathSeg>,
    pub code: Code,
    /// Further `extensions` entries after `code` (the SQLSTATE of a mapped database error,
    /// the error class a function reported), in the order they were added.
    pub extensions: Vec<(&'static str, String)>,
}

impl GqlError {
    pub fn new(message: impl Into<String>, code: impl Into<Code>) -> GqlError {
        GqlError {
            message: message.into(),
            locations: Vec::new(),
            path: Vec::new(),
            code: code.into(),
            extensions: Vec::new(),
        }
    }
    pub fn with_extension(mut self, key: &'static str, value: impl Into<String>) -> GqlError {
        self.extensions.push((key, value.into()));
        self
    }
    pub fn at(mut self, line: usize, column: usize) -> GqlError {
        self.locations.push((line, column));
        self
    }
    pub fn with_path(mut self, path: Vec<PathSeg>) -> GqlError {
        self.path = path;
        self
    }
}

impl Serialize for GqlError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Loc((usize, usize));
        impl Serialize for Loc {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("line", &self.0.0)?;
                m.serialize_entry("column", &self.0.1)?;
                m.end()
            }
        }
        struct Ext<'a>(&'a str, &'a [(&'static str, String)]);
        impl Serialize for Ext<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1 + self.1.len()))?;
                m.serialize_entry("code", self.0)?;
                for (k, v) in self.1 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("message", &self.message)?;
        if !self.locations.is_empty() {
            let locs: Vec<Loc> = self.locations.iter().copied().map(Loc).collect();
            m.serialize_entry("locations", &locs)?;
        }
        if !self.path.is_empty() {
            m.serialize_entry("path", &self.path)?;
        }
        m.serialize_entry("extensions", &Ext(self.code.as_str(), &self.extensions))?;
        m.end()
    }
}

/// Writes `"errors":[...]` (with a trailing comma when `more`).
pub fn write_errors(out: &mut String, errors: &[GqlError]) {
    out.push_str("\"errors\":");
    out.push_str(&serde_json::to_string(errors).unwrap_or_else(|_| "[]".into()));
}

/// A response with errors only (request errors: nothing executed).
pub fn errors_only(errors: &[GqlError]) -> String {
    let mut out = String::from("{");
    write_errors(&mut out, errors);
    out.push('}');
    out
}

/// An order-preserving JSON tree, used only to repair results that contain sentinels.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Json, E> {
                Ok(Json::Num(n.into()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Json, E> {
                Ok(Json::Num(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Json::Null, Json::Num))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Json::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Json>()? {
                    v.push((k, x));
                }
                Ok(Json::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Num(n) => n.serialize(s),
            Json::Str(t) => s.serialize_str(t),
            Json::Arr(items) => {
                let mut q = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    q.serialize_element(i)?;
                }
                q.end()
            }
            Json::Obj(fields) => {
                let mut m = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// The outcome of repairing one root field.
#[derive(Debug)]
pub struct Repaired {
    /// The repaired JSON text (`null` when the root value itself became null).
    pub text: String,
    /// True when the root field is null although non-null: `data` becomes null.
    pub propagate: bool,
    pub errors: Vec<GqlError>,
}

/// Repairs the raw JSON of one root field if it contains sentinels; `None` when clean.
pub fn repair(
    raw: &str,
    root_key: &str,
    root_type: &str,
    ty: &TypeRef,
    sel: &Selection,
) -> Option<Repaired> {
    if !raw.contains(SENTINEL_MARK) && !has_forbidden_null(raw, sel) {
        return None;
    }
    let mut value: Json = serde_json::from_str(raw).ok()?;
    let mut errors = Vec::new();
    let mut path = vec![PathSeg::Key(root_key.to_owned())];
    let propagate = fix_field(
        &mut value,
        ty,
        Some(sel),
        root_type,
        root_key,
        &mut path,
        &mut errors,
    );
    let text = serde_json::to_string(&value).unwrap_or_else(|_| "null".into());
    Some(Repaired {
        text,
        propagate,
        errors,
    })
}

fn non_null_keys<'a>(sel: &'a Selection, out: &mut Vec<&'a str>) {
    for item in &sel.items {
        if let SelItem::Field { key, field, sub } = item {
            if !field.ty.nullable && !out.contains(&key.as_str()) {
                out.push(key);
            }
            if let Some(sub) = sub {
                non_null_keys(sub, out);
            }
        }
    }
}

/// True when the text has `"<key>" : null` for a key selected as non-null somewhere. A
/// false positive only costs the exact (slow) check.
pub fn has_forbidden_null(raw: &str, sel: &Selection) -> bool {
    let mut keys = Vec::new();
    non_null_keys(sel, &mut keys);
    if keys.is_empty() {
        return false;
    }
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices("\" : null") {
        let mut j = i;
        while j > 0 && (bytes[j - 1].is_ascii_alphanumeric() || bytes[j - 1] == b'_') {
            j -= 1;
        }
        if j < i && j > 0 && bytes[j - 1] == b'"' && keys.contains(&&raw[j..i]) {
            return true;
        }
    }
    false
}

fn sentinel_error(s: &str, parent: &str, field: &str, ty: &TypeRef) -> Option<String> {
    if s == SENTINEL_NULL {
        Some(format!(
            "Cannot return null for non-nullable field {parent}.{field}."
        ))
    } else if s == SENTINEL_INT {
        Some(format!(
            "Int cannot represent a value outside the 32-bit range ({parent}.{field})."
        ))
    } else if s == SENTINEL_ITEM {
        Some(format!(
            "An item of {parent}.{field} is null, but its items are non-nullable."
        ))
    } else if s == SENTINEL_ENUM {
        Some(format!(
            "Enum {} cannot represent the stored value of {parent}.{field}.",
            ty.name
        ))
    } else {
        None
    }
}

/// Returns true when the value had to become null although its position is non-null.
#[allow(clippy::too_many_arguments)]
fn fix_value(
    v: &mut Json,
    ty: &TypeRef,
    nullable: bool,
    sel: Option<&Selection>,
    parent: &str,
    field: &str,
    path: &mut Vec<PathSeg>,
    errors: &mut Vec<GqlError>,
) -> bool {
    if matches!(v, Json::Null) {
        if !nullable {
            errors.push(
                GqlError::new(
                    format!("Cannot return null for non-nullable field {parent}.{field}."),
                    ErrorCode::InternalServerError,
                )
                .with_path(path.clone()),
            );
            return true;
        }
        return false;
    }
    if let Json::Str(s) = v {
        if s == SENTINEL_FORBIDDEN {
            errors.push(
                GqlError::new(
                    format!("not authorized to read {parent}.{field}"),
                    ErrorCode::Forbidden,
                )
                .with_path(path.clone()),
            );
            *v = Json::Null;
            return !nullable;
        }
        if let Some(msg) = sentinel_error(s, parent, field, ty) {
            errors.push(GqlError::new(msg, ErrorCode::InternalServerError).with_path(path.clone()));
            *v = Json::Null;
            return !nullable;
        }
        return false;
    }
    if let (Json::Obj(_), Some(sel)) = (&*v, sel)
        && fix_object(v, sel, path, errors)
    {
        *v = Json::Null;
        return !nullable;
    }
    false
}

#[allow(clippy::too_many_arguments)]
fn fix_field(
    v: &mut Json,
    ty: &TypeRef,
    sel: Option<&Selection>,
    parent: &str,
    field: &str,
    path: &mut Vec<PathSeg>,
    errors: &mut Vec<GqlError>,
) -> bool {
    if ty.list
        && let Json::Arr(items) = v
    {
        let mut bad = false;
        for (i, item) in items.iter_mut().enumerate() {
            path.push(PathSeg::Index(i));
            let b = fix_value(item, ty, ty.item_nullable, sel, parent, field, path, errors);
            path.pop();
            if b {
                bad = true;
                break;
            }
        }
        if bad {
            *v = Json::Null;
            return !ty.nullable;
        }
        return false;
    }
    fix_value(v, ty, ty.nullable, sel, parent, field, path, errors)
}

fn fix_object(
    v: &mut Json,
    sel: &Selection,
    path: &mut Vec<PathSeg>,
    errors: &mut Vec<GqlError>,
) -> bool {
    let Json::Obj(fields) = v else {
        return false;
    };
    for (k, child) in fields.iter_mut() {
        let (field, sub) = match sel.items.iter().find(|i| i.key() == k) {
            Some(SelItem::Field { field, sub, .. }) => (field, sub.as_ref()),
            Some(SelItem::Withheld { field, .. }) => (field, None),
            _ => continue,
        };
        path.push(PathSeg::Key(k.clone()));
        let bad = fix_field(
            child,
            &field.ty,
            sub,
            &sel.type_name,
            &field.name,
            path,
            errors,
        );
        path.pop();
        if bad {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FieldDef, NamedKind, ScalarKind};

    fn sel() -> Selection {
        let field = |name: &str, nullable: bool| SelItem::Field {
            key: name.to_owned(),
            field: FieldDef {
                name: name.to_owned(),
                key: name.to_owned(),
                ty: TypeRef {
                    name: "String".into(),
                    kind: NamedKind::Scalar(ScalarKind::String),
                    nullable,
                    list: false,
                    item_nullable: false,
                },
                description: None,
                requires_scope: None,
                on_deny: Default::default(),
            },
            sub: None,
        };
        Selection {
            type_name: "User".into(),
            items: vec![field("name", false), field("email", true)],
        }
    }

    #[test]
    fn forbidden_null_scan() {
        let s = sel();
        assert!(!has_forbidden_null(
            r#"[{"name" : "a", "email" : null}]"#,
            &s
        ));
        assert!(has_forbidden_null(
            r#"[{"name" : null, "email" : null}]"#,
            &s
        ));
        // Inside a string the quotes are escaped: no false negative matters, no panic.
        assert!(!has_forbidden_null(
            r#"[{"name" : "x\"name\" : null", "email" : null}]"#,
            &s
        ));
        assert!(!has_forbidden_null(r#"[{"nickname" : null}]"#, &s));
        assert!(!has_forbidden_null(r#"" : null"#, &s));
    }

    #[test]
    fn repair_propagates_with_indices() {
        let s = sel();
        let ty = TypeRef {
            name: "User".into(),
            kind: NamedKind::Object,
            nullable: false,
            list: true,
            item_nullable: false,
        };
        let r = repair(
            r#"[{"name" : "a", "email" : null}, {"name" : null, "email" : "e"}]"#,
            "users",
            "Query",
            &ty,
            &s,
        )
        .expect("needs repair");
        assert!(r.propagate);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(
            r.errors[0].path,
            vec![
                PathSeg::Key("users".into()),
                PathSeg::Index(1),
                PathSeg::Key("name".into())
            ]
        );
    }
}
