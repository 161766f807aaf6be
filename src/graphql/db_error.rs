//! What a client is told when PostgreSQL refuses a statement, and what a mutation function's
//! error class becomes. The SQLSTATE classes map the way PostgREST documents them: bad input
//! values and constraint violations are the client's to fix, unique and foreign key violations
//! and serialization failures are conflicts, a permission the role lacks is `FORBIDDEN`, a
//! cancelled statement is `TIMEOUT`. Everything else stays `INTERNAL_SERVER_ERROR` with
//! nothing but a pointer to the log.
//!
//! The database's own wording names tables, constraints, columns and roles, so it is sent
//! only where it describes the client's value (class 22: "invalid input syntax for type uuid")
//! or is the function author's own (`RAISE`, SQLSTATE P0001). The execution paths in
//! `execute` call [`classify`] and put the result on the field's error.

use tokio_postgres::error::SqlState;

use crate::error_code::ErrorCode;
use crate::graphql::response::Code;

/// The longest database message passed on to a client.
const MAX_MESSAGE: usize = 500;
/// The longest error class or hint taken as a code.
const MAX_CODE: usize = 64;

/// A database error as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub code: Code,
    pub message: String,
    /// The SQLSTATE, sent as `extensions.sqlstate` for mapped errors.
    pub sqlstate: String,
    /// A serialization failure or deadlock: running the transaction again may succeed.
    pub retryable: bool,
}

/// The client's view of `e`, or `None` when it is the server's problem (the caller answers
/// `INTERNAL_SERVER_ERROR` and logs the error).
pub fn classify(e: &tokio_postgres::Error) -> Option<Classified> {
    let db = e.as_db_error()?;
    let state = db.code().code();
    let fixed = |code: ErrorCode, message: &str| Classified {
        code: Code::Engine(code),
        message: message.to_owned(),
        sqlstate: state.to_owned(),
        retryable: false,
    };
    let c = match db.code() {
        s if *s == SqlState::T_R_SERIALIZATION_FAILURE || *s == SqlState::T_R_DEADLOCK_DETECTED => {
            Classified {
                retryable: true,
                ..fixed(
                    ErrorCode::Conflict,
                    "the change conflicted with a concurrent transaction; retry it",
                )
            }
        }
        s if *s == SqlState::UNIQUE_VIOLATION => fixed(
            ErrorCode::Conflict,
            "a row with the same unique value already exists",
        ),
        s if *s == SqlState::FOREIGN_KEY_VIOLATION => fixed(
            ErrorCode::Conflict,
            "the change refers to a row that does not exist, or removes one that others refer to",
        ),
        s if *s == SqlState::NOT_NULL_VIOLATION => {
            fixed(ErrorCode::BadUserInput, "a required value is missing")
        }
        s if *s == SqlState::CHECK_VIOLATION => fixed(
            ErrorCode::BadUserInput,
            "a value is outside what the data allows",
        ),
        _ if state.starts_with("23") => fixed(
            ErrorCode::BadUserInput,
            "the change violates a rule of the data",
        ),
        _ if state.starts_with("22") => fixed(ErrorCode::BadUserInput, &bounded(db.message())),
        s if *s == SqlState::INSUFFICIENT_PRIVILEGE => {
            fixed(ErrorCode::Forbidden, "permission denied")
        }
        s if *s == SqlState::QUERY_CANCELED => fixed(
            ErrorCode::Timeout,
            "the statement was cancelled: it ran longer than allowed",
        ),
        s if *s == SqlState::RAISE_EXCEPTION => {
            let code = [db.hint(), db.detail()]
                .into_iter()
                .flatten()
                .find(|h| is_code(h))
                .map_or(Code::Engine(ErrorCode::MutationFailed), Code::reported);
            Classified {
                code,
                ..fixed(ErrorCode::MutationFailed, &bounded(db.message()))
            }
        }
        _ => return None,
    };
    Some(c)
}

/// The code for an error class a mutation function returned: upper-case codes as they are,
/// the conventional lower-case names (`not_found`, `validation`) as the upper-case codes
/// clients match on; `None` for a class that is not a code at all (the caller keeps the
/// generic one).
pub fn class_code(class: &str) -> Option<Code> {
    let upper: String = class
        .trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    let code = match upper.as_str() {
        "VALIDATION" | "INVALID" => "VALIDATION_ERROR",
        "UNAUTHORIZED" | "UNAUTHENTICATED" => "UNAUTHENTICATED",
        "PERMISSION_DENIED" => "FORBIDDEN",
        "INTERNAL" | "ERROR" => "INTERNAL_SERVER_ERROR",
        "DUPLICATE" | "ALREADY_EXISTS" => "CONFLICT",
        other => other,
    };
    is_code(code).then(|| Code::reported(code))
}

/// `A_CODE_LIKE_THIS`: what a hint or class must look like to be sent as a code.
fn is_code(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_CODE
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c == '_' || c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// `message`, cut to a length fit for a client.
pub fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_become_codes() {
        let code = |c: &str| class_code(c).map(|c| c.as_str().to_owned());
        assert_eq!(code("not_found").as_deref(), Some("NOT_FOUND"));
        assert_eq!(code("NOT_FOUND").as_deref(), Some("NOT_FOUND"));
        assert_eq!(code("validation").as_deref(), Some("VALIDATION_ERROR"));
        assert_eq!(code("already-exists").as_deref(), Some("CONFLICT"));
        assert_eq!(code("conflict").as_deref(), Some("CONFLICT"));
        assert_eq!(code("out_of_stock").as_deref(), Some("OUT_OF_STOCK"));
        assert_eq!(code("no way: {x}"), None);
        assert_eq!(code(""), None);
        assert_eq!(code("1ST"), None);
        assert_eq!(code(&"A".repeat(65)), None);
    }

    #[test]
    fn hints_must_look_like_codes() {
        assert!(is_code("POST_LOCKED"));
        assert!(is_code("E42"));
        assert!(!is_code("see /etc/x"));
        assert!(!is_code("post_locked"));
        assert!(!is_code(""));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let m = "é".repeat(400);
        let b = bounded(&m);
        assert!(b.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(b.ends_with('…'));
        assert_eq!(bounded("short"), "short");
    }
}
