//! The observer condition language: parser and evaluator.
//!
//! Conditions are parsed once at start ([`Condition::parse`]) into a small AST and evaluated
//! against every change of the observer's entity by the matcher. A parse error carries the
//! 1-based column so config validation can point at it.
//!
//! Grammar (lowest precedence first):
//! ```text
//! expr     := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!" unary | primary
//! primary  := "(" expr ")" | call | operand [ cmp_op operand | "in" "[" literal, ... "]" ]
//! call     := changed(f) | changed_to(f, lit) | changed_from(f, lit) | has(f)
//! operand  := path | literal            path := ("after" | "before") "." name ("." name)*
//! literal  := "string" | 'string' | number | true | false | null
//! cmp_op   := == | != | < | <= | > | >=
//! ```
//! Semantics (chosen to never fail at run time):
//! - a missing path is `null`; `before.*` is `null` on INSERT and `after.*` on DELETE;
//! - `==`/`!=` compare JSON values, numbers numerically (`1 == 1.0`);
//! - `<`, `<=`, `>`, `>=` compare two numbers or two strings (ISO timestamps order as
//!   strings); any other pair is simply false;
//! - a bare path used as a condition is true only when the value is the boolean `true`;
//! - `changed(f)`: `f` is in the change's `changed_fields` when the change carries that list
//!   (the tracking trigger lists every column on INSERT), otherwise `before.f != after.f`;
//! - `changed_to(f, v)` = `changed(f) && after.f == v`; `changed_from(f, v)` =
//!   `changed(f) && before.f == v`;
//! - `has(f)`: the row image (`after`, or `before` on DELETE) has `f` and it is not null.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// A parse error with the 1-based column where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ConditionError {
    pub column: usize,
    pub message: String,
}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ConditionError> {
    Err(ConditionError {
        column,
        message: message.into(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Num(n) => write!(f, "number {n}"),
            Tok::Dot => f.write_str("`.`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::Eq => f.write_str("`==`"),
            Tok::Ne => f.write_str("`!=`"),
            Tok::Lt => f.write_str("`<`"),
            Tok::Le => f.write_str("`<=`"),
            Tok::Gt => f.write_str("`>`"),
            Tok::Ge => f.write_str("`>=`"),
            Tok::And => f.write_str("`&&`"),
            Tok::Or => f.write_str("`||`"),
            Tok::Not => f.write_str("`!`"),
            Tok::End => f.write_str("end of condition"),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ConditionError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = |a: char, b: char| c == a && chars.get(i + 1) == Some(&b);
        let (tok, len) = if two('=', '=') {
            (Tok::Eq, 2)
        } else if two('!', '=') {
            (Tok::Ne, 2)
        } else if two('<', '=') {
            (Tok::Le, 2)
        } else if two('>', '=') {
            (Tok::Ge, 2)
        } else if two('&', '&') {
            (Tok::And, 2)
        } else if two('|', '|') {
            (Tok::Or, 2)
        } else {
            match c {
                '<' => (Tok::Lt, 1),
                '>' => (Tok::Gt, 1),
                '!' => (Tok::Not, 1),
                '.' => (Tok::Dot, 1),
                ',' => (Tok::Comma, 1),
                '(' => (Tok::LParen, 1),
                ')' => (Tok::RParen, 1),
                '[' => (Tok::LBracket, 1),
                ']' => (Tok::RBracket, 1),
                '=' => return err(col, "`=` is not an operator; use `==` to compare"),
                '&' => return err(col, "`&` is not an operator; use `&&`"),
                '|' => return err(col, "`|` is not an operator; use `||`"),
                '"' | '\'' => {
                    let quote = c;
                    let mut s = String::new();
                    let mut j = i + 1;
                    loop {
                        match chars.get(j) {
                            None => return err(col, "unterminated string"),
                            Some(&ch) if ch == quote => break,
                            Some('\\') => {
                                let esc = match chars.get(j + 1) {
                                    Some('n') => '\n',
                                    Some('t') => '\t',
                                    Some('\\') => '\\',
                                    Some('"') => '"',
                                    Some('\'') => '\'',
                                    Some(other) => {
                                        return err(
                                            j + 1,
                                            format!("unknown escape `\\{other}` in string"),
                                        );
                                    }
                                    None => return err(col, "unterminated string"),
                                };
                                s.push(esc);
                                j += 2;
                            }
                            Some(&ch) => {
                                s.push(ch);
                                j += 1;
                            }
                        }
                    }
                    out.push((Tok::Str(s), col));
                    i = j + 1;
                    continue;
                }
                c if c.is_ascii_digit() || (c == '-' && next_is_digit(&chars, i)) => {
                    let mut j = i + 1;
                    while j < chars.len()
                        && (chars[j].is_ascii_digit()
                            || chars[j] == '.'
                            || chars[j] == 'e'
                            || chars[j] == 'E'
                            || ((chars[j] == '-' || chars[j] == '+')
                                && matches!(chars[j - 1], 'e' | 'E')))
                    {
                        j += 1;
                    }
                    let text: String = chars[i..j].iter().collect();
                    let n: f64 = text
                        .parse()
                        .or_else(|_| err(col, format!("invalid number `{text}`")))?;
                    out.push((Tok::Num(n), col));
                    i = j;
                    continue;
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let mut j = i + 1;
                    while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                        j += 1;
                    }
                    out.push((Tok::Ident(chars[i..j].iter().collect()), col));
                    i = j;
                    continue;
                }
                other => return err(col, format!("unexpected character `{other}`")),
            }
        };
        out.push((tok, col));
        i += len;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Image, Vec<String>),
    Literal(Value),
}

/// The parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, CmpOp, Operand),
    In(Operand, Vec<Value>),
    Truthy(Operand),
    Changed(Vec<String>),
    ChangedTo(Vec<String>, Value),
    ChangedFrom(Vec<String>, Value),
    Has(Vec<String>),
}

/// Builds a call's AST node from its field and optional value.
type CallCtor = fn(Vec<String>, Option<Value>) -> Expr;

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

const FUNCTIONS: &str = "changed, changed_to, changed_from, has";

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn col(&self) -> usize {
        self.toks[self.pos].1
    }
    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ConditionError> {
        if *self.peek() == want {
            self.next();
            Ok(())
        } else {
            err(
                self.col(),
                format!("expected {what}, found {}", self.peek()),
            )
        }
    }

    fn parse_or(&mut self) -> Result<Expr, ConditionError> {
        let mut lhs = self.parse_and()?;
        while *self.peek() == Tok::Or {
            self.next();
            let rhs = self.parse_and()?;
            lhs = Expr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn parse_and(&mut self) -> Result<Expr, ConditionError> {
        let mut lhs = self.parse_unary()?;
        while *self.peek() == Tok::And {
            self.next();
            let rhs = self.parse_unary()?;
            lhs = Expr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self) -> Result<Expr, ConditionError> {
        if *self.peek() == Tok::Not {
            self.next();
            return Ok(Expr::Not(Box::new(self.parse_unary()?)));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, ConditionError> {
        if *self.peek() == Tok::LParen {
            self.next();
            let e = self.parse_or()?;
            self.expect(Tok::RParen, "`)`")?;
            return Ok(e);
        }
        if let Tok::Ident(name) = self.peek().clone()
            && self.toks.get(self.pos + 1).map(|t| &t.0) == Some(&Tok::LParen)
        {
            return self.parse_call(&name);
        }
        let start = self.col();
        let lhs = self.parse_operand()?;
        let op = match self.peek() {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.next();
            let rhs = self.parse_operand()?;
            return Ok(Expr::Compare(lhs, op, rhs));
        }
        if *self.peek() == Tok::Ident("in".into()) {
            self.next();
            self.expect(Tok::LBracket, "`[` after `in`")?;
            let mut list = Vec::new();
            if *self.peek() != Tok::RBracket {
                loop {
                    list.push(self.parse_literal("a literal in the `in` list")?);
                    if *self.peek() == Tok::Comma {
                        self.next();
                        continue;
                    }
                    break;
                }
            }
            self.expect(Tok::RBracket, "`,` or `]`")?;
            return Ok(Expr::In(lhs, list));
        }
        match lhs {
            Operand::Literal(Value::Bool(_)) | Operand::Path(..) => Ok(Expr::Truthy(lhs)),
            Operand::Literal(_) => err(
                start,
                format!(
                    "expected a comparison operator after this literal, found {}",
                    self.peek()
                ),
            ),
        }
    }

    fn parse_call(&mut self, name: &str) -> Result<Expr, ConditionError> {
        let name_col = self.col();
        self.next(); // name
        self.next(); // (
        let (want_value, ctor): (bool, CallCtor) = match name {
            "changed" => (false, |f, _| Expr::Changed(f)),
            "has" => (false, |f, _| Expr::Has(f)),
            "changed_to" => (true, |f, v| Expr::ChangedTo(f, v.unwrap_or(Value::Null))),
            "changed_from" => (true, |f, v| Expr::ChangedFrom(f, v.unwrap_or(Value::Null))),
            other => {
                return err(
                    name_col,
                    format!("unknown function `{other}`; known functions: {FUNCTIONS}"),
                );
            }
        };
        let field = self.parse_field(name)?;
        let value = if want_value {
            self.expect(
                Tok::Comma,
                &format!("`,` and a value in `{name}(field, value)`"),
            )?;
            Some(self.parse_literal(&format!("a literal value as `{name}`'s second argument"))?)
        } else {
            None
        };
        let what = if want_value {
            "`)`".to_string()
        } else {
            format!("`)`: `{name}` takes one field name")
        };
        self.expect(Tok::RParen, &what)?;
        Ok(ctor(field, value))
    }

    /// A field name for a function: `title` or `author.name`. `after.`/`before.` prefixes
    /// are accepted and dropped, since the functions look at both images themselves.
    fn parse_field(&mut self, func: &str) -> Result<Vec<String>, ConditionError> {
        let mut segs = Vec::new();
        loop {
            match self.next() {
                (Tok::Ident(s), _) => segs.push(s),
                (t, col) => {
                    return err(
                        col,
                        format!("expected a field name in `{func}(...)`, found {t}"),
                    );
                }
            }
            if *self.peek() == Tok::Dot {
                self.next();
            } else {
                break;
            }
        }
        if segs.len() > 1 && (segs[0] == "after" || segs[0] == "before") {
            segs.remove(0);
        }
        Ok(segs)
    }

    fn parse_operand(&mut self) -> Result<Operand, ConditionError> {
        match self.peek().clone() {
            Tok::Ident(name) if name == "after" || name == "before" => {
                let image = if name == "after" {
                    Image::After
                } else {
                    Image::Before
                };
                self.next();
                let mut segs = Vec::new();
                while *self.peek() == Tok::Dot {
                    self.next();
                    match self.next() {
                        (Tok::Ident(s), _) => segs.push(s),
                        (t, col) => {
                            return err(col, format!("expected a field name after `.`, found {t}"));
                        }
                    }
                }
                if segs.is_empty() {
                    return err(
                        self.col(),
                        format!("expected `.` and a field name after `{name}`"),
                    );
                }
                Ok(Operand::Path(image, segs))
            }
            Tok::Ident(name) if !matches!(name.as_str(), "true" | "false" | "null") => err(
                self.col(),
                format!(
                    "unknown name `{name}`: paths start with `after.` or `before.`, \
                     functions are {FUNCTIONS}"
                ),
            ),
            _ => Ok(Operand::Literal(self.parse_literal("a path or a literal")?)),
        }
    }

    fn parse_literal(&mut self, what: &str) -> Result<Value, ConditionError> {
        let (tok, col) = self.next();
        Ok(match tok {
            Tok::Str(s) => Value::String(s),
            Tok::Num(n) => serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Tok::Ident(s) if s == "true" => Value::Bool(true),
            Tok::Ident(s) if s == "false" => Value::Bool(false),
            Tok::Ident(s) if s == "null" => Value::Null,
            t => return err(col, format!("expected {what}, found {t}")),
        })
    }
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct ChangeView<'a> {
    pub before: Option<&'a Value>,
    pub after: Option<&'a Value>,
    pub changed_fields: Option<&'a [String]>,
}

/// A parsed condition, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    expr: Expr,
}

impl Condition {
    pub fn parse(src: &str) -> Result<Condition, ConditionError> {
        let toks = lex(src)?;
        if toks.len() == 1 {
            return err(1, "empty condition");
        }
        let mut p = Parser { toks, pos: 0 };
        let expr = p.parse_or()?;
        if *p.peek() != Tok::End {
            return err(
                p.col(),
                format!(
                    "expected `&&`, `||` or end of condition, found {}",
                    p.peek()
                ),
            );
        }
        Ok(Condition {
            source: src.to_owned(),
            expr,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    pub fn eval(&self, change: &ChangeView<'_>) -> bool {
        eval(&self.expr, change)
    }
}

static NULL: Value = Value::Null;

fn lookup<'a>(root: Option<&'a Value>, segs: &[String]) -> &'a Value {
    let mut cur = match root {
        Some(v) => v,
        None => return &NULL,
    };
    for s in segs {
        cur = match cur.get(s) {
            Some(v) => v,
            None => return &NULL,
        };
    }
    cur
}

fn operand<'a>(op: &'a Operand, c: &ChangeView<'a>) -> &'a Value {
    match op {
        Operand::Literal(v) => v,
        Operand::Path(Image::After, segs) => lookup(c.after, segs),
        Operand::Path(Image::Before, segs) => lookup(c.before, segs),
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn json_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn changed(field: &[String], c: &ChangeView<'_>) -> bool {
    if let (Some(list), [single]) = (c.changed_fields, field) {
        return list.iter().any(|f| f == single);
    }
    !json_eq(lookup(c.before, field), lookup(c.after, field))
}

fn eval(e: &Expr, c: &ChangeView<'_>) -> bool {
    match e {
        Expr::Or(a, b) => eval(a, c) || eval(b, c),
        Expr::And(a, b) => eval(a, c) && eval(b, c),
        Expr::Not(a) => !eval(a, c),
        Expr::Compare(l, op, r) => {
            let (l, r) = (operand(l, c), operand(r, c));
            match op {
                CmpOp::Eq => json_eq(l, r),
                CmpOp::Ne => !json_eq(l, r),
                CmpOp::Lt => json_cmp(l, r) == Some(Ordering::Less),
                CmpOp::Le => matches!(json_cmp(l, r), Some(Ordering::Less | Ordering::Equal)),
                CmpOp::Gt => json_cmp(l, r) == Some(Ordering::Greater),
                CmpOp::Ge => matches!(json_cmp(l, r), Some(Ordering::Greater | Ordering::Equal)),
            }
        }
        Expr::In(l, list) => {
            let v = operand(l, c);
            list.iter().any(|x| json_eq(v, x))
        }
        Expr::Truthy(o) => *operand(o, c) == Value::Bool(true),
        Expr::Changed(f) => changed(f, c),
        Expr::ChangedTo(f, v) => changed(f, c) && json_eq(lookup(c.after, f), v),
        Expr::ChangedFrom(f, v) => changed(f, c) && json_eq(lookup(c.before, f), v),
        Expr::Has(f) => {
            let image = if c.after.is_some() { c.after } else { c.before };
            !lookup(image, f).is_null()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(src: &str, before: Value, after: Value, changed: Option<&[&str]>) -> bool {
        let cond = Condition::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let owned: Option<Vec<String>> = changed.map(|l| l.iter().map(|s| s.to_string()).collect());
        let view = ChangeView {
            before: (!before.is_null()).then_some(&before),
            after: (!after.is_null()).then_some(&after),
            changed_fields: owned.as_deref(),
        };
        cond.eval(&view)
    }

    fn update(src: &str) -> bool {
        check(
            src,
            json!({"title": "a", "published": false, "views": 10, "tags": null, "author": {"name": "x"}}),
            json!({"title": "b", "published": true, "views": 12.0, "tags": null, "author": {"name": "y"}, "rating": 4.5}),
            None,
        )
    }

    fn parse_err(src: &str) -> ConditionError {
        match Condition::parse(src) {
            Ok(c) => panic!("{src} parsed as {:?}", c.expr()),
            Err(e) => e,
        }
    }

    #[test]
    fn comparisons() {
        assert!(update("after.published == true"));
        assert!(update("before.published == false"));
        assert!(update("after.title != before.title"));
        assert!(update(
            "after.views > 11 && after.views >= 12 && after.views <= 12"
        ));
        assert!(update("after.views == 12"), "12.0 == 12 numerically");
        assert!(update("before.views < after.views"));
        assert!(!update("after.views < 5"));
        assert!(
            update("after.title > 'a'"),
            "strings order lexicographically"
        );
        assert!(!update("after.title > 5"), "mismatched types compare false");
        assert!(update("after.author.name == \"y\""));
        assert!(update("after.tags == null && after.missing == null"));
        assert!(update("after.rating >= 4.5 && after.rating < 1e1"));
        assert!(update("after.views > -1"));
    }

    #[test]
    fn in_lists() {
        assert!(update("after.title in ['a', 'b']"));
        assert!(!update("after.title in ['c']"));
        assert!(update("after.views in [1, 12]"));
        assert!(!update("after.title in []"));
        assert!(update("!(after.title in [null, 'z'])"));
    }

    #[test]
    fn boolean_operators_and_precedence() {
        assert!(update("after.published && !before.published"));
        assert!(update("false || after.published"));
        // && binds tighter than ||
        assert!(update("true || false && false"));
        assert!(!update("(true || false) && false"));
        assert!(update("!!after.published"));
        assert!(!update("after.title"), "a non-boolean path is not truthy");
    }

    #[test]
    fn change_functions() {
        assert!(update("changed(published) && changed(title)"));
        assert!(!update("changed(tags)"));
        assert!(update("changed(views)"));
        assert!(
            check("!changed(n)", json!({"n": 12}), json!({"n": 12.0}), None),
            "12 -> 12.0 is no change"
        );
        let e = parse_err("changed(views) == false");
        assert!(e.message.contains("expected `&&`, `||`"), "{e}");
        assert!(update("changed_to(published, true)"));
        assert!(!update("changed_to(published, false)"));
        assert!(update("changed_from(title, 'a')"));
        assert!(update("changed(author.name) && changed(after.author.name)"));
        assert!(update("has(rating) && !has(tags) && !has(nope)"));
    }

    #[test]
    fn changed_uses_the_change_fields_list_when_present() {
        let b = json!({"a": 1, "b": 1});
        let a = json!({"a": 2, "b": 1});
        assert!(check("changed(b)", b.clone(), a.clone(), Some(&["b"])));
        assert!(!check("changed(a)", b, a, Some(&["b"])));
    }

    #[test]
    fn insert_and_delete_images() {
        let ins = |s| {
            check(
                s,
                Value::Null,
                json!({"published": true, "t": "x"}),
                Some(&["published", "t"]),
            )
        };
        assert!(ins("after.published == true && before.published == null"));
        assert!(ins("changed(published) && changed_to(published, true)"));
        assert!(ins("has(t)"));
        let del = |s| check(s, json!({"published": true}), Value::Null, None);
        assert!(del("has(published) && after.published == null"));
        assert!(del("changed_from(published, true)"));
    }

    #[test]
    fn error_messages_name_the_column() {
        let e = parse_err("after.published = true");
        assert_eq!(e.column, 17);
        assert!(e.message.contains("use `==`"), "{e}");

        let e = parse_err("after.published == true &&");
        assert_eq!(e.column, 27);
        assert_eq!(
            e.to_string(),
            "column 27: expected a path or a literal, found end of condition"
        );

        let e = parse_err("published == true");
        assert_eq!(e.column, 1);
        assert!(
            e.message.contains("paths start with `after.` or `before.`"),
            "{e}"
        );

        let e = parse_err("changed(published) && chnged(title)");
        assert_eq!(e.column, 23);
        assert!(e.message.contains("unknown function `chnged`"), "{e}");

        let e = parse_err("after.title == 'abc");
        assert_eq!((e.column, e.message.as_str()), (16, "unterminated string"));

        let e = parse_err("(after.a == 1");
        assert_eq!(e.column, 14);
        assert!(e.message.contains("expected `)`"), "{e}");

        let e = parse_err("changed_to(published)");
        assert_eq!(e.column, 21);
        assert!(e.message.contains("`,` and a value"), "{e}");

        let e = parse_err("changed(a, 1)");
        assert_eq!(e.column, 10);
        assert!(e.message.contains("takes one field name"), "{e}");

        let e = parse_err("after.a in [1, after.b]");
        assert_eq!(e.column, 16);
        assert!(e.message.contains("literal in the `in` list"), "{e}");

        let e = parse_err("after == 1");
        assert_eq!(e.column, 7);
        assert!(e.message.contains("after `after`"), "{e}");

        let e = parse_err("after.a == 1 after.b == 2");
        assert_eq!(e.column, 14);
        assert!(e.message.contains("expected `&&`, `||`"), "{e}");

        let e = parse_err("after.a == 1 # comment");
        assert_eq!(e.column, 14);
        assert!(e.message.contains("unexpected character `#`"), "{e}");

        let e = parse_err("   ");
        assert_eq!(e.message, "empty condition");

        let e = parse_err("42");
        assert!(e.message.contains("comparison operator"), "{e}");

        let e = parse_err("after.a & after.b");
        assert!(e.message.contains("use `&&`"), "{e}");
    }
}
