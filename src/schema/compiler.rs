//! The compiler: authoring `schema.json` → [`CompiledSchema`]. It checks every name and type
//! reference, maps GraphQL names to `data` keys (camelCase → snake_case), and generates the
//! filter, `<Type>WhereInput` and `<Type>OrderBy` inputs and the automatic query arguments.
//!
//! [`compile_str`] runs named phases in order, each a function that reads the document and
//! what the earlier phases produced: `parse_document` → `declare_names` →
//! `compile_enums` → `compile_object_types` → `compile_input_types` →
//! `generate_inputs` (and `order_direction`) → `compile_queries` →
//! `compile_mutations` → assembly. `Ctx` carries the file name and the warnings through
//! all of them. The SDK's authorization keys (`requires_role`, `requires_scope`/`on_deny`,
//! `requires_actor`, `inject_params` and `inject_defaults`) are checked and carried into the
//! compiled schema, which the planner enforces.

use std::collections::HashSet;

use serde_json::Value;

use super::authoring::*;
use super::compiled::*;
use super::{SchemaError, Warning, json_error};

/// `createdAt` → `created_at`, `authorID` → `author_id`.
pub fn to_snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn valid_graphql_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    !name.starts_with("__") && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Names the runtime defines itself.
const RESERVED: &[&str] = &["Query", "Mutation", "Subscription", "OrderDirection"];

/// What every phase shares: the file that errors and warnings name, and the warnings found
/// so far, in the order found.
struct Ctx<'a> {
    file: &'a str,
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    fn err(&self, context: impl Into<String>, message: impl Into<String>) -> SchemaError {
        SchemaError::Invalid {
            file: self.file.to_owned(),
            context: context.into(),
            message: message.into(),
        }
    }
    fn warn(&mut self, context: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: self.file.to_owned(),
            context: context.into(),
            message: message.into(),
        });
    }
    fn extra(&mut self, context: &str, extra: &Extra) {
        for key in extra.keys() {
            self.warn(
                context.to_owned(),
                format!("unknown key `{key}` ignored (written by a newer SDK?)"),
            );
        }
    }
    /// The name and the context of an item of `section` whose name [`declare_names`] has
    /// checked; warns about its unknown keys.
    fn item(&mut self, section: &str, name: &Option<String>, extra: &Extra) -> (String, String) {
        let name = name.clone().unwrap_or_default();
        let context = format!("{section}[{name}]");
        self.extra(&context, extra);
        (name, context)
    }
    /// The list under the required key `key` of the item at `context`; `empty` is the error
    /// for an empty one.
    fn required<'l, T>(
        &self,
        context: &str,
        key: &str,
        list: &'l Option<Vec<T>>,
        empty: &str,
    ) -> Result<&'l [T], SchemaError> {
        let list = list
            .as_deref()
            .ok_or_else(|| self.err(context, format!("missing required key `{key}`")))?;
        if list.is_empty() {
            return Err(self.err(context, empty));
        }
        Ok(list)
    }
    fn name(&self, context: &str, name: &Option<String>) -> Result<String, SchemaError> {
        let name = name
            .as_deref()
            .ok_or_else(|| self.err(context, "missing required key `name`"))?;
        if !valid_graphql_name(name) {
            return Err(self.err(
                context,
                format!("`{name}` is not a valid GraphQL name (letters, digits and _; not starting with a digit or __)"),
            ));
        }
        Ok(name.to_owned())
    }
}

/// Where a member (field, argument) of the item at `context` is: by its name, else by its
/// position `i` in `section`.
fn member_context(context: &str, section: &str, i: usize, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{context}.{section}[{n}]"),
        None => format!("{context}.{section}[{i}]"),
    }
}

/// A parsed type string: `[Post!]` → list of non-null Post.
struct ParsedType {
    name: String,
    bang: bool,
    list: bool,
    item_nullable: bool,
}

fn parse_type_string(s: &str) -> Option<ParsedType> {
    let s = s.trim();
    let (s, bang) = match s.strip_suffix('!') {
        Some(rest) => (rest.trim(), true),
        None => (s, false),
    };
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?.trim();
        let (inner, item_bang) = match inner.strip_suffix('!') {
            Some(rest) => (rest.trim(), true),
            None => (inner, false),
        };
        if inner.is_empty() || inner.contains(['[', ']', '!']) {
            return None;
        }
        Some(ParsedType {
            name: inner.to_owned(),
            bang,
            list: true,
            item_nullable: !item_bang,
        })
    } else {
        if s.is_empty() || s.contains(['[', ']', '!']) {
            return None;
        }
        Some(ParsedType {
            name: s.to_owned(),
            bang,
            list: false,
            item_nullable: false,
        })
    }
}

/// The declared type names by kind, which type references resolve against.
struct Names {
    objects: HashSet<String>,
    enums: HashSet<String>,
    inputs: HashSet<String>,
}

impl Names {
    /// Fails when the input `name` generated for object type `owner` is already declared.
    fn check_generated(&self, ctx: &Ctx<'_>, name: &str, owner: &str) -> Result<(), SchemaError> {
        if self.objects.contains(name) || self.enums.contains(name) || self.inputs.contains(name) {
            return Err(ctx.err(
                format!("types[{owner}]"),
                format!("the generated input `{name}` clashes with a type of the same name"),
            ));
        }
        Ok(())
    }
    fn kind(&self, name: &str, input: bool) -> Option<NamedKind> {
        if let Some(s) = ScalarKind::from_name(name) {
            return Some(NamedKind::Scalar(s));
        }
        if self.enums.contains(name) {
            return Some(NamedKind::Enum);
        }
        if input {
            self.inputs.contains(name).then_some(NamedKind::Input)
        } else {
            self.objects.contains(name).then_some(NamedKind::Object)
        }
    }
}

fn type_ref(
    ctx: &Ctx<'_>,
    names: &Names,
    context: &str,
    ty: Option<&str>,
    nullable: Option<bool>,
    input: bool,
) -> Result<TypeRef, SchemaError> {
    let ty = ty.ok_or_else(|| ctx.err(context, "missing required key `type`"))?;
    let parsed = parse_type_string(ty)
        .ok_or_else(|| ctx.err(context, format!("`{ty}` is not a GraphQL type")))?;
    let kind = names.kind(&parsed.name, input).ok_or_else(|| {
        ctx.err(
            context,
            format!(
                "unknown {} type `{}`",
                if input { "input" } else { "output" },
                parsed.name
            ),
        )
    })?;
    let name = match kind {
        NamedKind::Scalar(s) => s.name().to_owned(),
        _ => parsed.name,
    };
    Ok(TypeRef {
        name,
        kind,
        nullable: !parsed.bang && nullable.unwrap_or(true),
        list: parsed.list,
        item_nullable: parsed.item_nullable,
    })
}

/// Compiles the text of an authoring `schema.json`; `file` names it in errors.
///
/// The phases run in this order, each reading what the earlier ones produced; the first
/// error stops compilation, and the warnings come in the order the phases find them.
pub fn compile_str(text: &str, file: &str) -> Result<(CompiledSchema, Vec<Warning>), SchemaError> {
    let mut ctx = Ctx {
        file,
        warnings: Vec::new(),
    };
    let doc = parse_document(&mut ctx, text)?;
    let names = declare_names(&ctx, &doc)?;
    let mut enums = compile_enums(&mut ctx, &doc)?;
    let types = compile_object_types(&mut ctx, &doc, &names)?;
    let input_types = compile_input_types(&mut ctx, &doc, &names)?;
    let generated = generate_inputs(&ctx, &names, &types)?;
    if let Some(direction) = order_direction(&generated.order_inputs) {
        enums.push(direction);
    }
    let queries = compile_queries(&mut ctx, &doc, &names, &types)?;
    let mutations = compile_mutations(&mut ctx, &doc, &names, &types)?;
    let schema = CompiledSchema {
        version: COMPILED_SCHEMA_VERSION,
        types,
        enums,
        input_types,
        filters: generated.filters,
        where_inputs: generated.where_inputs,
        order_inputs: generated.order_inputs,
        queries,
        mutations,
    };
    Ok((schema, ctx.warnings))
}

/// Phase 1, the document: parses `text` into the [`AuthoringSchema`] every later phase
/// reads, and warns about its top-level keys (unknown keys, the sections not supported yet,
/// an unknown naming convention). Fails only on text that is not a `schema.json`.
fn parse_document(ctx: &mut Ctx<'_>, text: &str) -> Result<AuthoringSchema, SchemaError> {
    let doc: AuthoringSchema = serde_json::from_str(text).map_err(|e| json_error(ctx.file, &e))?;
    ctx.extra("top level", &doc.extra);
    for (key, list) in [
        ("interfaces", &doc.interfaces),
        ("unions", &doc.unions),
        ("subscriptions", &doc.subscriptions),
    ] {
        if !list.is_empty() {
            ctx.warn(
                key,
                format!("{} {key} ignored: not supported yet", list.len()),
            );
        }
    }
    if let Some(conv) = &doc.naming_convention
        && conv != "camelCase"
        && conv != "snake_case"
    {
        ctx.warn(
            "naming_convention",
            format!("unknown naming convention `{conv}`; data keys are snake_case"),
        );
    }
    Ok(doc)
}

/// Phase 2, names: reads the `name` of every type, enum and input type of `doc` and
/// produces the [`Names`] that type references resolve against, so that types can refer to
/// each other in any order. Fails on an invalid, reserved or twice-defined name.
fn declare_names(ctx: &Ctx<'_>, doc: &AuthoringSchema) -> Result<Names, SchemaError> {
    let mut seen: HashSet<String> = HashSet::new();
    let (mut objects, mut enums, mut inputs) = (HashSet::new(), HashSet::new(), HashSet::new());
    let sections = [
        (
            "types",
            doc.types.iter().map(|t| &t.name).collect::<Vec<_>>(),
            &mut objects,
        ),
        (
            "enums",
            doc.enums.iter().map(|e| &e.name).collect::<Vec<_>>(),
            &mut enums,
        ),
        (
            "input_types",
            doc.input_types.iter().map(|t| &t.name).collect::<Vec<_>>(),
            &mut inputs,
        ),
    ];
    for (section, declared, set) in sections {
        for (i, name) in declared.into_iter().enumerate() {
            let name = ctx.name(&format!("{section}[{i}]"), name)?;
            if RESERVED.contains(&name.as_str()) || ScalarKind::from_name(&name).is_some() {
                return Err(ctx.err(
                    format!("{section}[{name}]"),
                    format!("the name `{name}` is reserved"),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(ctx.err(
                    format!("{section}[{name}]"),
                    format!("the type name `{name}` is defined twice"),
                ));
            }
            set.insert(name);
        }
    }
    Ok(Names {
        objects,
        enums,
        inputs,
    })
}

/// Phase 3, enums: reads `doc.enums` and produces one [`EnumType`] per enum, in document
/// order, with the stored value of each GraphQL value (`value`, else the name). Fails on an
/// enum without values and on a value named twice or named `true`, `false` or `null`.
fn compile_enums(ctx: &mut Ctx<'_>, doc: &AuthoringSchema) -> Result<Vec<EnumType>, SchemaError> {
    let mut enums = Vec::new();
    for e in &doc.enums {
        let (name, context) = ctx.item("enums", &e.name, &e.extra);
        let values = ctx.required(
            &context,
            "values",
            &e.values,
            "an enum needs at least one value",
        )?;
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let vctx = format!("{context}.values[{i}]");
            ctx.extra(&vctx, &v.extra);
            let vname = ctx.name(&vctx, &v.name)?;
            if matches!(vname.as_str(), "true" | "false" | "null") {
                return Err(ctx.err(&vctx, format!("`{vname}` cannot be an enum value")));
            }
            let stored = match &v.value {
                None | Some(Value::Null) => vname.clone(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            if out.iter().any(|x: &EnumValueDef| x.name == vname) {
                return Err(ctx.err(&vctx, format!("value `{vname}` is defined twice")));
            }
            out.push(EnumValueDef {
                name: vname,
                value: stored,
                description: v.description.clone(),
            });
        }
        enums.push(EnumType {
            name,
            description: e.description.clone(),
            values: out,
        });
    }
    Ok(enums)
}

/// Phase 4, object types: reads `doc.types` and produces one [`ObjectType`] per type, in
/// document order: each field's type reference resolved against `names` (output types), its
/// `data` key (`sql_column`, else the snake_case name), the view (`sql_source`, else
/// `v_<snake_case name>`) and the names of its generated where and order inputs. Fails on a
/// type without fields, a field named twice and an unknown or malformed field type.
fn compile_object_types(
    ctx: &mut Ctx<'_>,
    doc: &AuthoringSchema,
    names: &Names,
) -> Result<Vec<ObjectType>, SchemaError> {
    let mut types = Vec::new();
    for t in &doc.types {
        let (name, context) = ctx.item("types", &t.name, &t.extra);
        let fields = ctx.required(
            &context,
            "fields",
            &t.fields,
            "a type needs at least one field",
        )?;
        let mut out: Vec<FieldDef> = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let fctx = member_context(&context, "fields", i, &f.name);
            ctx.extra(&fctx, &f.extra);
            let fname = ctx.name(&fctx, &f.name)?;
            if out.iter().any(|x| x.name == fname) {
                return Err(ctx.err(&fctx, format!("field `{fname}` is defined twice")));
            }
            let mut ty = type_ref(ctx, names, &fctx, f.ty.as_deref(), f.nullable, false)?;
            let (requires_scope, on_deny) = field_scope(ctx, &fctx, f)?;
            if on_deny == OnDeny::Mask && !ty.nullable {
                // A masked field is null for tokens without the scope, so the schema must
                // say it may be null: introspection and clients then expect it.
                ctx.warn(
                    &fctx,
                    "on_deny = \"mask\" on a non-null field: compiled as nullable",
                );
                ty.nullable = true;
            }
            out.push(FieldDef {
                requires_scope,
                on_deny,
                key: f
                    .sql_column
                    .clone()
                    .unwrap_or_else(|| to_snake_case(&fname)),
                name: fname,
                ty,
                description: f.description.clone(),
            });
        }
        let sql_source = t
            .sql_source
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| format!("v_{}", to_snake_case(&name)));
        types.push(ObjectType {
            where_input: format!("{name}WhereInput"),
            order_input: format!("{name}OrderBy"),
            name,
            description: t.description.clone(),
            sql_source: Some(sql_source),
            fields: out,
            requires_role: non_empty(ctx, &context, "requires_role", &t.requires_role)?,
        });
    }
    Ok(types)
}

/// Phase 5, input types: reads `doc.input_types` and produces one [`InputType`] per input
/// type, in document order, each field compiled as an argument ([`arg_def`]: input type
/// references, `data` key, checked default). Fails on an input type without fields.
fn compile_input_types(
    ctx: &mut Ctx<'_>,
    doc: &AuthoringSchema,
    names: &Names,
) -> Result<Vec<InputType>, SchemaError> {
    let mut input_types = Vec::new();
    for t in &doc.input_types {
        let (name, context) = ctx.item("input_types", &t.name, &t.extra);
        let fields = ctx.required(
            &context,
            "fields",
            &t.fields,
            "an input type needs at least one field",
        )?;
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let fctx = member_context(&context, "fields", i, &f.name);
            out.push(arg_def(ctx, names, &fctx, f)?);
        }
        input_types.push(InputType {
            name,
            description: t.description.clone(),
            fields: out,
        });
    }
    Ok(input_types)
}

/// What [`generate_inputs`] produces: the inputs no `schema.json` declares.
struct GeneratedInputs {
    filters: Vec<FilterInput>,
    where_inputs: Vec<WhereInput>,
    order_inputs: Vec<OrderInput>,
}

/// Phase 6, generated inputs: reads the compiled object `types` and produces the filter
/// inputs (one per scalar or enum some field filters on, in first-use order), one
/// `<Type>WhereInput` and one `<Type>OrderBy` per type. Fails on a field named `_and`, `_or`
/// or `_not` and on a generated name that `names` already holds.
fn generate_inputs(
    ctx: &Ctx<'_>,
    names: &Names,
    types: &[ObjectType],
) -> Result<GeneratedInputs, SchemaError> {
    let mut filters: Vec<FilterInput> = Vec::new();
    let mut where_inputs = Vec::new();
    let mut order_inputs = Vec::new();
    for t in types {
        let (wfields, ofields) = where_and_order_fields(ctx, names, t, types, &mut filters)?;
        for special in ["_and", "_or", "_not"] {
            if t.fields.iter().any(|f| f.name == special) {
                return Err(ctx.err(
                    format!("types[{}].fields[{special}]", t.name),
                    format!("`{special}` is reserved for filters"),
                ));
            }
        }
        names.check_generated(ctx, &t.where_input, &t.name)?;
        names.check_generated(ctx, &t.order_input, &t.name)?;
        where_inputs.push(WhereInput {
            name: t.where_input.clone(),
            type_name: t.name.clone(),
            fields: wfields,
        });
        order_inputs.push(OrderInput {
            name: t.order_input.clone(),
            type_name: t.name.clone(),
            fields: ofields,
        });
    }
    Ok(GeneratedInputs {
        filters,
        where_inputs,
        order_inputs,
    })
}

/// The where and order fields of object type `t`, in field order: a scalar or enum field
/// filters with its filter input (added to `filters` on first use) and sorts unless it is a
/// list or JSON; an object field filters with that type's where input; a scalar without
/// operators and an input-typed field get neither.
fn where_and_order_fields(
    ctx: &Ctx<'_>,
    names: &Names,
    t: &ObjectType,
    types: &[ObjectType],
    filters: &mut Vec<FilterInput>,
) -> Result<(Vec<WhereField>, Vec<OrderField>), SchemaError> {
    let mut wfields = Vec::new();
    let mut ofields = Vec::new();
    for f in &t.fields {
        if f.requires_scope.is_some() {
            // Filtering or sorting on a field would reveal what a token without its
            // scope may not read: scoped fields get neither.
            continue;
        }
        match f.ty.kind {
            NamedKind::Scalar(_) | NamedKind::Enum => {
                let Some(filter) = filter_input(&f.ty) else {
                    continue;
                };
                let fname = filter.name.clone();
                if !filters.iter().any(|x| x.name == fname) {
                    names.check_generated(ctx, &fname, &t.name)?;
                    filters.push(filter);
                }
                wfields.push(WhereField {
                    name: f.name.clone(),
                    key: f.key.clone(),
                    target: if f.ty.list {
                        WhereTarget::ScalarList { filter: fname }
                    } else {
                        WhereTarget::Filter { filter: fname }
                    },
                });
                let scalar = match f.ty.kind {
                    NamedKind::Scalar(s) => Some(s),
                    _ => None,
                };
                if !f.ty.list && scalar != Some(ScalarKind::Json) {
                    ofields.push(OrderField {
                        name: f.name.clone(),
                        key: f.key.clone(),
                        scalar,
                    });
                }
            }
            NamedKind::Object
                if types
                    .iter()
                    .any(|o| o.name == f.ty.name && o.requires_role.is_some()) =>
            {
                // Filtering on a role-restricted type would reveal its rows to every role.
            }
            NamedKind::Object => {
                let where_input = format!("{}WhereInput", f.ty.name);
                wfields.push(WhereField {
                    name: f.name.clone(),
                    key: f.key.clone(),
                    target: if f.ty.list {
                        WhereTarget::List { where_input }
                    } else {
                        WhereTarget::Object { where_input }
                    },
                });
            }
            NamedKind::Input => {}
        }
    }
    Ok((wfields, ofields))
}

/// The filter input a field of type `ty` filters with: `<Scalar>Filter` with the scalar's
/// operators, `<Enum>Filter` with equality, membership and null tests; none for a scalar
/// without operators and for object and input types.
fn filter_input(ty: &TypeRef) -> Option<FilterInput> {
    match ty.kind {
        NamedKind::Scalar(s) if !s.operators().is_empty() => Some(FilterInput {
            name: format!("{}Filter", s.name()),
            scalar: Some(s),
            enum_name: None,
            operators: s.operators().to_vec(),
        }),
        NamedKind::Enum => {
            use Operator::*;
            Some(FilterInput {
                name: format!("{}Filter", ty.name),
                scalar: None,
                enum_name: Some(ty.name.clone()),
                operators: vec![Eq, Neq, In, Nin, Isnull],
            })
        }
        _ => None,
    }
}

/// The `OrderDirection` enum, which the runtime defines itself: produced only when some
/// order input of `order_inputs` has a field, so that a schema that cannot sort does not
/// declare it.
fn order_direction(order_inputs: &[OrderInput]) -> Option<EnumType> {
    if !order_inputs.iter().any(|o| !o.fields.is_empty()) {
        return None;
    }
    Some(EnumType {
        name: "OrderDirection".into(),
        description: Some("Sort direction.".into()),
        values: vec![
            EnumValueDef {
                name: "ASC".into(),
                value: "ASC".into(),
                description: Some("Ascending (nulls last).".into()),
            },
            EnumValueDef {
                name: "DESC".into(),
                value: "DESC".into(),
                description: Some("Descending (nulls first).".into()),
            },
        ],
    })
}

/// Phase 7, queries: reads `doc.queries` and produces one [`QueryField`] per query, in
/// document order ([`compile_query`]), resolved against `names` and the compiled object
/// `types`. Fails on a query named twice and on a schema without queries.
fn compile_queries(
    ctx: &mut Ctx<'_>,
    doc: &AuthoringSchema,
    names: &Names,
    types: &[ObjectType],
) -> Result<Vec<QueryField>, SchemaError> {
    let mut queries = Vec::new();
    let mut root_names = HashSet::new();
    let defaults = inject_defaults(ctx, doc, false);
    for (i, q) in doc.queries.iter().enumerate() {
        let qname = ctx.name(&format!("queries[{i}]"), &q.name)?;
        let context = format!("queries[{qname}]");
        ctx.extra(&context, &q.extra);
        if let Some(a) = &q.auto_params {
            ctx.extra(&format!("{context}.auto_params"), &a.extra);
        }
        if !root_names.insert(qname.clone()) {
            return Err(ctx.err(&context, "query defined twice"));
        }
        queries.push(compile_query(
            ctx, names, types, &defaults, &context, qname, q,
        )?);
    }
    if queries.is_empty() {
        return Err(ctx.err("queries", "the schema needs at least one query"));
    }
    Ok(queries)
}

/// One query named `name`: its return type must be one of the object `types`; the view is
/// the query's `sql_source`, else the type's. The declared arguments come first, in order
/// ([`query_argument`]), then those `auto_params` adds ([`auto_arguments`]).
fn compile_query(
    ctx: &mut Ctx<'_>,
    names: &Names,
    types: &[ObjectType],
    defaults: &[(String, String)],
    context: &str,
    name: String,
    q: &AuthoringQuery,
) -> Result<QueryField, SchemaError> {
    let (parsed, object) = return_type(ctx, context, q.return_type.as_deref(), types)?;
    let returns_list = q.returns_list || parsed.list;
    let view = q
        .sql_source
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| object.sql_source.clone())
        .ok_or_else(|| ctx.err(context, "missing required key `sql_source`"))?;
    let mut arguments = root_arguments(
        ctx,
        context,
        &q.arguments,
        |a: &QueryArg| &a.arg.name,
        |ctx, actx, a| query_argument(ctx, names, object, actx, returns_list, a),
    )?;
    if returns_list {
        auto_arguments(object, q.auto_params.as_ref(), &mut arguments);
    } else if q
        .auto_params
        .as_ref()
        .is_some_and(|a| a.r#where || a.order_by || a.limit || a.offset)
    {
        ctx.warn(
            context,
            "auto_params ignored: the query does not return a list",
        );
    }
    Ok(QueryField {
        name,
        description: q.description.clone(),
        return_type: object.name.clone(),
        returns_list,
        nullable: q.nullable.unwrap_or(!returns_list) && !parsed.bang,
        arguments,
        view,
        requires_actor: requires_actor(ctx, context, &q.requires_actor)?,
        inject: inject_params(
            ctx,
            context,
            &q.inject_params,
            defaults,
            &q.exclude_inject_defaults,
            false,
        )?,
    })
}

/// One declared argument of a query returning `object`: its role comes from its name
/// (`limit` and `offset` only on a list query); `where` and `orderBy` take the object's
/// generated inputs whatever type they declare, and any other argument filters on the field
/// of the same name, whose `data` key it takes.
fn query_argument(
    ctx: &mut Ctx<'_>,
    names: &Names,
    object: &ObjectType,
    context: &str,
    returns_list: bool,
    a: &AuthoringField,
) -> Result<QueryArg, SchemaError> {
    let aname = ctx.name(context, &a.name)?;
    let role = match aname.as_str() {
        "id" => ArgRole::Id,
        "where" => ArgRole::Where,
        "orderBy" | "order_by" => ArgRole::OrderBy,
        "limit" if returns_list => ArgRole::Limit,
        "offset" if returns_list => ArgRole::Offset,
        _ => ArgRole::Equals,
    };
    let def = match role {
        ArgRole::Where => generated_arg(&aname, &object.where_input, false),
        ArgRole::OrderBy => generated_arg(&aname, &object.order_input, true),
        _ => {
            let mut def = arg_def(ctx, names, context, a)?;
            if role == ArgRole::Equals {
                let field = object.field(&aname).ok_or_else(|| {
                    ctx.err(
                        context,
                        format!(
                            "argument `{aname}` matches no field of `{}` (arguments other than id/where/orderBy/limit/offset filter on the field of the same name)",
                            object.name
                        ),
                    )
                })?;
                def.key = field.key.clone();
            }
            if matches!(role, ArgRole::Limit | ArgRole::Offset)
                && def.ty.kind != NamedKind::Scalar(ScalarKind::Int)
            {
                return Err(ctx.err(context, format!("`{aname}` must be an Int")));
            }
            def
        }
    };
    Ok(QueryArg { arg: def, role })
}

/// The arguments `auto` turns on for a list query returning `object`, appended to
/// `arguments` in the order where, orderBy, limit, offset; a role already declared is not
/// added again.
fn auto_arguments(object: &ObjectType, auto: Option<&AutoParams>, arguments: &mut Vec<QueryArg>) {
    let has = |args: &Vec<QueryArg>, r: ArgRole| args.iter().any(|a| a.role == r);
    if auto.is_some_and(|a| a.r#where) && !has(arguments, ArgRole::Where) {
        arguments.push(QueryArg {
            arg: generated_arg("where", &object.where_input, false),
            role: ArgRole::Where,
        });
    }
    if auto.is_some_and(|a| a.order_by) && !has(arguments, ArgRole::OrderBy) {
        arguments.push(QueryArg {
            arg: generated_arg("orderBy", &object.order_input, true),
            role: ArgRole::OrderBy,
        });
    }
    for (on, role, name) in [
        (auto.is_some_and(|a| a.limit), ArgRole::Limit, "limit"),
        (auto.is_some_and(|a| a.offset), ArgRole::Offset, "offset"),
    ] {
        if on && !has(arguments, role) {
            arguments.push(QueryArg {
                arg: ArgDef {
                    name: name.into(),
                    key: name.into(),
                    ty: TypeRef {
                        name: "Int".into(),
                        kind: NamedKind::Scalar(ScalarKind::Int),
                        nullable: true,
                        list: false,
                        item_nullable: false,
                    },
                    default: None,
                    description: None,
                },
                role,
            });
        }
    }
}

/// Phase 8, mutations: reads `doc.mutations` and produces one [`MutationField`] per
/// mutation, in document order ([`compile_mutation`]). Fails on a mutation named twice.
fn compile_mutations(
    ctx: &mut Ctx<'_>,
    doc: &AuthoringSchema,
    names: &Names,
    types: &[ObjectType],
) -> Result<Vec<MutationField>, SchemaError> {
    let mut mutations = Vec::new();
    let mut mutation_names = HashSet::new();
    let defaults = inject_defaults(ctx, doc, true);
    for (i, m) in doc.mutations.iter().enumerate() {
        let mname = ctx.name(&format!("mutations[{i}]"), &m.name)?;
        let context = format!("mutations[{mname}]");
        ctx.extra(&context, &m.extra);
        if !mutation_names.insert(mname.clone()) {
            return Err(ctx.err(&context, "mutation defined twice"));
        }
        mutations.push(compile_mutation(
            ctx, names, types, &defaults, &context, mname, m,
        )?);
    }
    Ok(mutations)
}

/// One mutation named `name`: its return type must be an object type of `names`, its
/// `sql_source` names the function, its operation is checked ([`mutation_operation`]) and
/// its arguments are compiled in order ([`arg_def`]).
fn compile_mutation(
    ctx: &mut Ctx<'_>,
    names: &Names,
    types: &[ObjectType],
    defaults: &[(String, String)],
    context: &str,
    name: String,
    m: &AuthoringMutation,
) -> Result<MutationField, SchemaError> {
    let (parsed, _) = return_type(ctx, context, m.return_type.as_deref(), types)?;
    let function = m
        .sql_source
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ctx.err(context, "missing required key `sql_source` (the function)"))?;
    let operation = mutation_operation(ctx, context, m.operation.as_deref())?;
    let arguments = root_arguments(
        ctx,
        context,
        &m.arguments,
        |a: &ArgDef| &a.name,
        |ctx, actx, a| arg_def(ctx, names, actx, a),
    )?;
    Ok(MutationField {
        name,
        description: m.description.clone(),
        return_type: parsed.name,
        returns_list: m.returns_list || parsed.list,
        nullable: m.nullable.unwrap_or(true) && !parsed.bang,
        arguments,
        function,
        operation,
        requires_actor: requires_actor(ctx, context, &m.requires_actor)?,
        inject: inject_params(
            ctx,
            context,
            &m.inject_params,
            defaults,
            &m.exclude_inject_defaults,
            true,
        )?,
    })
}

/// The project's `inject_defaults` for queries (`mutation` false) or mutations: the `base`
/// entries, then those of the kind, which replace a `base` entry of the same name.
fn inject_defaults(
    ctx: &mut Ctx<'_>,
    doc: &AuthoringSchema,
    mutation: bool,
) -> Vec<(String, String)> {
    let Some(d) = &doc.inject_defaults else {
        return Vec::new();
    };
    if !mutation {
        ctx.extra("inject_defaults", &d.extra);
    }
    let kind = if mutation { &d.mutations } else { &d.queries };
    let mut out: Vec<(String, String)> = d
        .base
        .iter()
        .filter(|(k, _)| !kind.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(kind.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// An optional string key that, when present, must not be empty.
fn non_empty(
    ctx: &Ctx<'_>,
    context: &str,
    key: &str,
    value: &Option<String>,
) -> Result<Option<String>, SchemaError> {
    match value.as_deref().map(str::trim) {
        None => Ok(None),
        Some("") => Err(ctx.err(context, format!("`{key}` is empty"))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// A field's `requires_scope` and `on_deny` (`reject` when absent).
fn field_scope(
    ctx: &Ctx<'_>,
    context: &str,
    f: &AuthoringField,
) -> Result<(Option<String>, OnDeny), SchemaError> {
    let scope = non_empty(ctx, context, "requires_scope", &f.requires_scope)?;
    let on_deny = match f.on_deny.as_deref() {
        None | Some("reject") => OnDeny::Reject,
        Some("mask") => OnDeny::Mask,
        Some(other) => {
            return Err(ctx.err(
                context,
                format!("on_deny `{other}` is neither \"reject\" nor \"mask\""),
            ));
        }
    };
    if scope.is_none() && f.on_deny.is_some() {
        return Err(ctx.err(context, "on_deny without requires_scope"));
    }
    Ok((scope, on_deny))
}

/// A root field's `requires_actor`: a non-empty list (an empty one would admit everybody
/// while reading as a gate, so it is refused, as the SDK does).
fn requires_actor(
    ctx: &Ctx<'_>,
    context: &str,
    actors: &Option<Vec<String>>,
) -> Result<Vec<String>, SchemaError> {
    match actors {
        None => Ok(Vec::new()),
        Some(list) if list.is_empty() || list.iter().any(|a| a.trim().is_empty()) => {
            Err(ctx.err(context, "requires_actor must list at least one actor type"))
        }
        Some(list) => Ok(list.clone()),
    }
}

/// A root field's `inject_params`, plus the project's `inject_defaults` for its kind
/// (`defaults`: param → `"jwt:<claim>"`) except those it opts out of; its own entries win.
/// `source` must be `jwt` (or, on a mutation, `jwt_optional`); anything else fails the
/// compile, naming the field, because ignoring it would leave a query unfiltered.
fn inject_params(
    ctx: &mut Ctx<'_>,
    context: &str,
    params: &Option<std::collections::BTreeMap<String, AuthoringInject>>,
    defaults: &[(String, String)],
    exclude: &Option<Vec<String>>,
    mutation: bool,
) -> Result<Vec<InjectParam>, SchemaError> {
    let mut out: Vec<InjectParam> = Vec::new();
    let exclude = exclude.as_deref().unwrap_or_default();
    for name in exclude {
        if !defaults.iter().any(|(p, _)| p == name) {
            return Err(ctx.err(
                context,
                format!("exclude_inject_defaults names `{name}`, which no inject_defaults entry declares"),
            ));
        }
    }
    let mut specs: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for (param, spec) in params.iter().flatten() {
        ctx.extra(&format!("{context}.inject_params[{param}]"), &spec.extra);
        specs.push((param.clone(), spec.source.clone(), spec.claim.clone()));
    }
    for (param, source) in defaults {
        if exclude.contains(param) || specs.iter().any(|(p, _, _)| p == param) {
            continue;
        }
        let (src, claim) = match source.split_once(':') {
            Some((s, c)) => (Some(s.to_owned()), Some(c.to_owned())),
            None => (Some(source.clone()), None),
        };
        specs.push((param.clone(), src, claim));
    }
    for (param, source, claim) in specs {
        let pctx = format!("{context}.inject_params[{param}]");
        if param.is_empty() || !param.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
            return Err(ctx.err(&pctx, format!("`{param}` is not a parameter name")));
        }
        let optional = match source.as_deref() {
            Some("jwt") => false,
            Some("jwt_optional") if mutation => true,
            Some("jwt_optional") => {
                return Err(ctx.err(
                    &pctx,
                    "source `jwt_optional` on a query: an absent claim cannot filter rows; use `jwt`",
                ));
            }
            Some(other) => {
                return Err(ctx.err(
                    &pctx,
                    format!("unknown inject source `{other}` (supported: jwt, and jwt_optional on mutations)"),
                ));
            }
            None => return Err(ctx.err(&pctx, "missing required key `source`")),
        };
        let claim = non_empty(ctx, &pctx, "claim", &claim)?
            .ok_or_else(|| ctx.err(&pctx, "missing required key `claim`"))?;
        out.push(InjectParam {
            param,
            claim,
            optional,
        });
    }
    Ok(out)
}

/// The `return_type` of the root field at `context`, which must name one of the object
/// `types` (a list or a non-null type of it); the parsed type string and that type.
fn return_type<'t>(
    ctx: &Ctx<'_>,
    context: &str,
    rt: Option<&str>,
    types: &'t [ObjectType],
) -> Result<(ParsedType, &'t ObjectType), SchemaError> {
    let rt = rt.ok_or_else(|| ctx.err(context, "missing required key `return_type`"))?;
    let parsed = parse_type_string(rt)
        .ok_or_else(|| ctx.err(context, format!("`{rt}` is not a GraphQL type")))?;
    let object = types
        .iter()
        .find(|t| t.name == parsed.name)
        .ok_or_else(|| {
            ctx.err(
                context,
                format!(
                    "return_type `{}` is not an object type of this schema",
                    parsed.name
                ),
            )
        })?;
    Ok((parsed, object))
}

/// The declared `arguments` of the root field at `context`, each compiled by `compile` in
/// order; fails on two arguments of the same name (`name_of`).
fn root_arguments<'a, T>(
    ctx: &mut Ctx<'a>,
    context: &str,
    arguments: &[AuthoringField],
    name_of: impl Fn(&T) -> &str,
    mut compile: impl FnMut(&mut Ctx<'a>, &str, &AuthoringField) -> Result<T, SchemaError>,
) -> Result<Vec<T>, SchemaError> {
    let mut out: Vec<T> = Vec::new();
    for (j, a) in arguments.iter().enumerate() {
        let actx = member_context(context, "arguments", j, &a.name);
        let arg = compile(ctx, &actx, a)?;
        if out.iter().any(|x| name_of(x) == name_of(&arg)) {
            return Err(ctx.err(&actx, "argument defined twice"));
        }
        out.push(arg);
    }
    Ok(out)
}

/// A mutation's `operation`, case-insensitive (`INSERT` is `CREATE`); none is `CUSTOM`,
/// with a warning.
fn mutation_operation(
    ctx: &mut Ctx<'_>,
    context: &str,
    operation: Option<&str>,
) -> Result<MutationOperation, SchemaError> {
    Ok(match operation.map(str::to_ascii_uppercase).as_deref() {
        Some("CREATE") | Some("INSERT") => MutationOperation::Create,
        Some("UPDATE") => MutationOperation::Update,
        Some("DELETE") => MutationOperation::Delete,
        Some("FUNCTION") => MutationOperation::Function,
        Some("CUSTOM") => MutationOperation::Custom,
        None => {
            ctx.warn(context, "no `operation`; CUSTOM assumed");
            MutationOperation::Custom
        }
        Some(other) => {
            return Err(ctx.err(
                context,
                format!("unknown operation `{other}` (CREATE, UPDATE, DELETE, FUNCTION or CUSTOM)"),
            ));
        }
    })
}

fn generated_arg(name: &str, input: &str, list: bool) -> ArgDef {
    ArgDef {
        name: name.into(),
        key: to_snake_case(name),
        ty: TypeRef {
            name: input.into(),
            kind: NamedKind::Input,
            nullable: true,
            list,
            item_nullable: false,
        },
        default: None,
        description: None,
    }
}

fn arg_def(
    ctx: &mut Ctx<'_>,
    names: &Names,
    context: &str,
    f: &AuthoringField,
) -> Result<ArgDef, SchemaError> {
    ctx.extra(context, &f.extra);
    let name = ctx.name(context, &f.name)?;
    let ty = type_ref(ctx, names, context, f.ty.as_deref(), f.nullable, true)?;
    if let Some(default) = &f.default
        && !default_matches(&ty, default)
    {
        return Err(ctx.err(
            context,
            format!(
                "default value {default} does not match type {}",
                ty.display()
            ),
        ));
    }
    Ok(ArgDef {
        key: f.sql_column.clone().unwrap_or_else(|| to_snake_case(&name)),
        name,
        ty,
        default: f.default.clone(),
        description: f.description.clone(),
    })
}

fn default_matches(ty: &TypeRef, v: &Value) -> bool {
    if v.is_null() {
        return ty.nullable;
    }
    if ty.list {
        return match v {
            Value::Array(items) => items.iter().all(|i| scalar_matches(ty, i)),
            other => scalar_matches(ty, other),
        };
    }
    scalar_matches(ty, v)
}

fn scalar_matches(ty: &TypeRef, v: &Value) -> bool {
    match ty.kind {
        NamedKind::Scalar(ScalarKind::Int) => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        NamedKind::Scalar(ScalarKind::Float) => v.is_number(),
        NamedKind::Scalar(ScalarKind::Boolean) => v.is_boolean(),
        NamedKind::Scalar(ScalarKind::BigInt) => v.is_i64() || v.is_string(),
        NamedKind::Scalar(ScalarKind::Json) => true,
        NamedKind::Scalar(_) => v.is_string(),
        NamedKind::Enum => v.is_string(),
        NamedKind::Input | NamedKind::Object => v.is_object(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case() {
        assert_eq!(to_snake_case("createdAt"), "created_at");
        assert_eq!(to_snake_case("authorId"), "author_id");
        assert_eq!(to_snake_case("authorID"), "author_id");
        assert_eq!(to_snake_case("HTTPServer"), "http_server");
        assert_eq!(to_snake_case("id"), "id");
        assert_eq!(to_snake_case("line2Text"), "line2_text");
    }

    #[test]
    fn type_strings() {
        let t = parse_type_string("[Post!]").unwrap();
        assert!(t.list && !t.item_nullable && !t.bang && t.name == "Post");
        let t = parse_type_string("String!").unwrap();
        assert!(!t.list && t.bang);
        assert!(parse_type_string("[[X]]").is_none());
        assert!(parse_type_string("").is_none());
    }
}
