//! The `extensions.code` values the engine answers GraphQL errors with. A leaf module, so the
//! statement builder (`sql`), the metrics and the GraphQL engine can all name a code without
//! depending on one another; `graphql::response` puts a code on each error it sends.

use std::fmt;

/// One `extensions.code` of the engine's own. The wire strings are the Apollo-style names
/// clients already match on; [`ErrorCode::as_str`] is the only place they are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The HTTP request is not a GraphQL request (bad JSON, `variables` not an object).
    BadRequest,
    /// An argument or variable value the schema does not accept.
    BadUserInput,
    /// The document does not parse.
    GraphqlParseFailed,
    /// The document parses but does not validate against the schema.
    GraphqlValidationFailed,
    /// A failure on the server's side; the message points at the server log.
    InternalServerError,
    /// A configured limit (size, depth, complexity, page size, …) was exceeded.
    LimitExceeded,
    /// A mutation over GET, or an HTTP method the endpoint does not serve.
    MethodNotAllowed,
    /// A mutation function reported failure without an error class of its own.
    MutationFailed,
    /// No media type the client accepts can carry the response.
    NotAcceptable,
    /// A non-null root query field found no row.
    NotFound,
    /// The document has several operations and no `operationName`.
    OperationNameRequired,
    /// `operationName` matches no operation of the document.
    OperationNotFound,
    /// Subscriptions, or an operation type the schema has none of.
    OperationNotSupported,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// A persisted-query hash the server does not know (APQ: send the document with it), or
    /// a document the trusted-documents allow-list does not hold.
    PersistedQueryNotFound,
    /// `extensions.persistedQuery` sent to a server with persisted queries turned off.
    PersistedQueryNotSupported,
    /// A verified identity lacks the role, scope or actor a field or operation requires.
    Forbidden,
    /// No valid token (missing with `auth.mode = "required"`, or invalid).
    Unauthenticated,
    /// The database cannot be reached.
    ServiceUnavailable,
    /// The request body's media type is not one the endpoint reads.
    UnsupportedMediaType,
    /// Over a rate limit: nothing ran; `Retry-After` says when to try again.
    RateLimited,
    /// The change conflicts with existing data (a unique or foreign key violation) or with a
    /// concurrent transaction (after one retry).
    Conflict,
    /// The statement was cancelled: `statement_timeout`, or the client went away.
    Timeout,
}

impl ErrorCode {
    /// Every code, in wire-string order (the metrics pre-create one series each).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::BadUserInput,
        ErrorCode::Conflict,
        ErrorCode::Forbidden,
        ErrorCode::GraphqlParseFailed,
        ErrorCode::GraphqlValidationFailed,
        ErrorCode::InternalServerError,
        ErrorCode::LimitExceeded,
        ErrorCode::MethodNotAllowed,
        ErrorCode::MutationFailed,
        ErrorCode::NotAcceptable,
        ErrorCode::NotFound,
        ErrorCode::OperationNameRequired,
        ErrorCode::OperationNotFound,
        ErrorCode::OperationNotSupported,
        ErrorCode::PayloadTooLarge,
        ErrorCode::PersistedQueryNotFound,
        ErrorCode::PersistedQueryNotSupported,
        ErrorCode::RateLimited,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Timeout,
        ErrorCode::Unauthenticated,
        ErrorCode::UnsupportedMediaType,
    ];

    /// The string sent as `extensions.code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            ErrorCode::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            ErrorCode::InternalServerError => "INTERNAL_SERVER_ERROR",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::MutationFailed => "MUTATION_FAILED",
            ErrorCode::NotAcceptable => "NOT_ACCEPTABLE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::OperationNameRequired => "OPERATION_NAME_REQUIRED",
            ErrorCode::OperationNotFound => "OPERATION_NOT_FOUND",
            ErrorCode::OperationNotSupported => "OPERATION_NOT_SUPPORTED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            ErrorCode::PersistedQueryNotSupported => "PERSISTED_QUERY_NOT_SUPPORTED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Timeout => "TIMEOUT",
        }
    }

    /// The code whose wire string is `s`, if it is one of the engine's.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_all_is_sorted_and_unique() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
        }
        let strs: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = strs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(strs, sorted);
        assert_eq!(ErrorCode::parse("ALREADY_SHIPPED"), None);
    }

    #[test]
    fn all_lists_every_variant() {
        // A new variant makes this match non-exhaustive: add it to ALL and count it below.
        for c in ErrorCode::ALL {
            match c {
                ErrorCode::BadRequest
                | ErrorCode::BadUserInput
                | ErrorCode::GraphqlParseFailed
                | ErrorCode::GraphqlValidationFailed
                | ErrorCode::InternalServerError
                | ErrorCode::LimitExceeded
                | ErrorCode::MethodNotAllowed
                | ErrorCode::MutationFailed
                | ErrorCode::NotAcceptable
                | ErrorCode::NotFound
                | ErrorCode::OperationNameRequired
                | ErrorCode::OperationNotFound
                | ErrorCode::OperationNotSupported
                | ErrorCode::PayloadTooLarge
                | ErrorCode::PersistedQueryNotFound
                | ErrorCode::PersistedQueryNotSupported
                | ErrorCode::Forbidden
                | ErrorCode::Unauthenticated
                | ErrorCode::ServiceUnavailable
                | ErrorCode::UnsupportedMediaType
                | ErrorCode::Conflict
                | ErrorCode::RateLimited
                | ErrorCode::Timeout => {}
            }
        }
        assert_eq!(ErrorCode::ALL.len(), 23);
    }
}
