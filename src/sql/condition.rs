//! The one operator table: what each filter operator (`eq`, `in`, `icontains`, `isnull`, …)
//! means in SQL, for both doors. GraphQL `where` (over a view's `data` jsonb, see
//! [`super::filter`]) and Flight view tickets (over native columns, see
//! `flight::plan`) resolve a field to an [`Operand`], turn the user's value into bound
//! text ([`Bound`]), and call [`condition`]: the SQL shape of every operator, the LIKE
//! escaping and the null test are written once, here.

use crate::schema::Operator;

use super::{Builder, Param};

/// How an operator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A binary comparison with this SQL symbol.
    Compare(&'static str),
    /// Membership in a list of values (`in`), or its negation (`nin`).
    AnyOf { negated: bool },
    /// A LIKE/ILIKE match; `pattern` says how the value becomes a pattern.
    Like { pattern: Pattern, ci: bool },
    /// `isnull: true|false`.
    IsNull,
}

/// How a `Like` operator's value becomes a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `%value%`, the value matched literally.
    Contains,
    /// `value%`
    Prefix,
    /// `%value`
    Suffix,
    /// The value is the pattern (`like`, `ilike`).
    Raw,
}

/// Every operator, in the order error messages list them.
pub const OPERATORS: [Operator; 17] = [
    Operator::Eq,
    Operator::Neq,
    Operator::Gt,
    Operator::Gte,
    Operator::Lt,
    Operator::Lte,
    Operator::In,
    Operator::Nin,
    Operator::Contains,
    Operator::Icontains,
    Operator::Startswith,
    Operator::Istartswith,
    Operator::Endswith,
    Operator::Iendswith,
    Operator::Like,
    Operator::Ilike,
    Operator::Isnull,
];

/// The operators' names, comma-separated, for error messages.
pub fn operator_names() -> String {
    OPERATORS
        .iter()
        .map(|o| o.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL meaning of `op`.
pub fn shape(op: Operator) -> Shape {
    use Operator::*;
    let like = |pattern, ci| Shape::Like { pattern, ci };
    match op {
        Eq => Shape::Compare("="),
        Neq => Shape::Compare("<>"),
        Gt => Shape::Compare(">"),
        Gte => Shape::Compare(">="),
        Lt => Shape::Compare("<"),
        Lte => Shape::Compare("<="),
        In => Shape::AnyOf { negated: false },
        Nin => Shape::AnyOf { negated: true },
        Contains => like(Pattern::Contains, false),
        Icontains => like(Pattern::Contains, true),
        Startswith => like(Pattern::Prefix, false),
        Istartswith => like(Pattern::Prefix, true),
        Endswith => like(Pattern::Suffix, false),
        Iendswith => like(Pattern::Suffix, true),
        Like => like(Pattern::Raw, false),
        Ilike => like(Pattern::Raw, true),
        Isnull => Shape::IsNull,
    }
}

/// Escapes LIKE metacharacters (`\`, `%`, `_`) so the text matches literally under
/// PostgreSQL's default escape character.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The LIKE pattern for `text` under `pattern`.
pub fn like_pattern(pattern: Pattern, text: &str) -> String {
    match pattern {
        Pattern::Contains => format!("%{}%", like_escape(text)),
        Pattern::Prefix => format!("{}%", like_escape(text)),
        Pattern::Suffix => format!("%{}", like_escape(text)),
        Pattern::Raw => text.to_owned(),
    }
}

/// How an operand is tested for null.
#[derive(Debug, Clone)]
pub enum NullTest {
    /// A jsonb expression: JSON `null` and a missing key are both null.
    Json(String),
    /// An SQL expression: `IS NULL`.
    Sql(String),
}

/// What a condition compares: the field's value as the comparison type, as text (for LIKE),
/// and how to test it for null; plus the type bound values are cast to.
#[derive(Debug, Clone)]
pub struct Operand {
    /// The value in its comparison type (`(data->>'views')::numeric`, `"total"`).
    pub typed: String,
    /// The value as text (`(data->>'title')`, `"name"`).
    pub text: String,
    pub null: NullTest,
    /// The SQL type bound values are cast to; `None` compares as text.
    pub cast: Option<String>,
}

/// A user's value, validated and converted to the text PostgreSQL casts from.
#[derive(Debug, Clone)]
pub enum Bound {
    One(String),
    Many(Vec<String>),
    Flag(bool),
}

/// Why a value does not fit an operator: the door words the message for its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// A comparison or LIKE needs one value.
    NeedsOne,
    /// `in`/`nin` need a list.
    NeedsList,
    /// `isnull` needs a boolean.
    NeedsFlag,
}

/// The boolean SQL expression for `operand <op> value`, every value a bind parameter.
pub fn condition(
    b: &mut Builder,
    op: Operator,
    operand: &Operand,
    value: Bound,
) -> Result<String, Mismatch> {
    b.conditions += 1;
    let cast = |p: String, array: bool| match &operand.cast {
        Some(t) if array => format!("CAST({p} AS {t}[])"),
        Some(t) => format!("CAST({p} AS {t})"),
        None => p,
    };
    match (shape(op), value) {
        (Shape::Compare(sym), Bound::One(t)) => {
            let p = b.param(Param::Text(Some(t)));
            Ok(format!("{} {sym} {}", operand.typed, cast(p, false)))
        }
        (Shape::AnyOf { negated }, Bound::Many(items)) => {
            let p = b.param(Param::TextArray(items.into_iter().map(Some).collect()));
            let any = format!("{} = ANY ({})", operand.typed, cast(p, true));
            Ok(if negated { format!("NOT ({any})") } else { any })
        }
        (Shape::Like { pattern, ci }, Bound::One(t)) => {
            let p = b.param(Param::Text(Some(like_pattern(pattern, &t))));
            let kw = if ci { "ILIKE" } else { "LIKE" };
            Ok(format!("{} {kw} {p}", operand.text))
        }
        (Shape::IsNull, Bound::Flag(flag)) => Ok(match (&operand.null, flag) {
            (NullTest::Json(j), true) => format!("coalesce(jsonb_typeof({j}), 'null') = 'null'"),
            (NullTest::Json(j), false) => format!("coalesce(jsonb_typeof({j}), 'null') <> 'null'"),
            (NullTest::Sql(e), true) => format!("{e} IS NULL"),
            (NullTest::Sql(e), false) => format!("{e} IS NOT NULL"),
        }),
        (Shape::AnyOf { .. }, _) => Err(Mismatch::NeedsList),
        (Shape::IsNull, _) => Err(Mismatch::NeedsFlag),
        _ => Err(Mismatch::NeedsOne),
    }
}

/// Joins boolean parts with `AND`/`OR`; no part is `TRUE` (an empty filter matches all).
pub fn join(parts: Vec<String>, op: &str) -> String {
    match parts.len() {
        0 => "TRUE".into(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(&format!(" {op} "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operand(typed: &str, text: &str, null: NullTest, cast: &str) -> Operand {
        Operand {
            typed: typed.into(),
            text: text.into(),
            null,
            cast: Some(cast.into()),
        }
    }

    fn json_operand() -> Operand {
        let null = NullTest::Json("d->'n'".into());
        operand("(d->>'n')::numeric", "(d->>'n')", null, "numeric")
    }

    fn column_operand() -> Operand {
        operand("\"n\"", "\"n\"", NullTest::Sql("\"n\"".into()), "bigint")
    }

    fn bound_for(op: Operator) -> Bound {
        match shape(op) {
            Shape::AnyOf { .. } => Bound::Many(vec!["1".into(), "2".into()]),
            Shape::IsNull => Bound::Flag(true),
            _ => Bound::One("5_%".into()),
        }
    }

    /// Every operator, over both kinds of operand: the one table both doors render from.
    #[test]
    fn every_operator_renders_the_same_shape_for_both_operands() {
        let expected = |op: Operator, typed: &str, text: &str, null: &str, cast: &str| {
            let v = |p: &str| format!("CAST({p} AS {cast})");
            match op {
                Operator::Eq => format!("{typed} = {}", v("$1::text")),
                Operator::Neq => format!("{typed} <> {}", v("$1::text")),
                Operator::Gt => format!("{typed} > {}", v("$1::text")),
                Operator::Gte => format!("{typed} >= {}", v("$1::text")),
                Operator::Lt => format!("{typed} < {}", v("$1::text")),
                Operator::Lte => format!("{typed} <= {}", v("$1::text")),
                Operator::In => format!("{typed} = ANY (CAST($1::text[] AS {cast}[]))"),
                Operator::Nin => format!("NOT ({typed} = ANY (CAST($1::text[] AS {cast}[])))"),
                Operator::Contains | Operator::Startswith | Operator::Endswith | Operator::Like => {
                    format!("{text} LIKE $1::text")
                }
                Operator::Icontains
                | Operator::Istartswith
                | Operator::Iendswith
                | Operator::Ilike => format!("{text} ILIKE $1::text"),
                Operator::Isnull => null.to_owned(),
            }
        };
        for op in OPERATORS {
            let mut b = Builder::default();
            let sql = condition(&mut b, op, &json_operand(), bound_for(op)).unwrap();
            let null = "coalesce(jsonb_typeof(d->'n'), 'null') = 'null'";
            assert_eq!(
                sql,
                expected(op, "(d->>'n')::numeric", "(d->>'n')", null, "numeric"),
                "{op:?}"
            );
            let mut b = Builder::default();
            let sql = condition(&mut b, op, &column_operand(), bound_for(op)).unwrap();
            assert_eq!(
                sql,
                expected(op, "\"n\"", "\"n\"", "\"n\" IS NULL", "bigint"),
                "{op:?}"
            );
        }
    }

    #[test]
    fn like_patterns_escape_what_they_do_not_mean() {
        assert_eq!(like_pattern(Pattern::Contains, r"5%_\"), r"%5\%\_\\%");
        assert_eq!(like_pattern(Pattern::Prefix, "a_"), r"a\_%");
        assert_eq!(like_pattern(Pattern::Suffix, "a%"), r"%a\%");
        assert_eq!(like_pattern(Pattern::Raw, "a%_"), "a%_");
    }

    #[test]
    fn a_value_that_does_not_fit_the_operator_is_refused() {
        let mut b = Builder::default();
        let o = column_operand();
        assert_eq!(
            condition(&mut b, Operator::In, &o, Bound::One("1".into())),
            Err(Mismatch::NeedsList)
        );
        assert_eq!(
            condition(&mut b, Operator::Isnull, &o, Bound::One("1".into())),
            Err(Mismatch::NeedsFlag)
        );
        assert_eq!(
            condition(&mut b, Operator::Eq, &o, Bound::Flag(true)),
            Err(Mismatch::NeedsOne)
        );
        assert!(b.params.is_empty(), "nothing bound for a refused value");
    }

    #[test]
    fn every_operator_name_round_trips() {
        for op in OPERATORS {
            assert_eq!(Operator::from_name(op.name()), Some(op));
        }
        assert!(operator_names().starts_with("eq, neq, gt"));
    }
}
