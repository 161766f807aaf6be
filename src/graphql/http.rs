//! GraphQL over HTTP (the GraphQL-over-HTTP specification): `POST` with
//! `application/json`, `GET` with query parameters (queries only), `operationName`,
//! `variables`; `application/graphql-response+json` (spec status codes) or
//! `application/json` (200 with errors); 4xx for malformed requests; gzip when accepted
//! (`accept_encoding`). `extensions.persistedQuery` (in the body, or the `extensions` GET
//! parameter) names a document by hash; [`super::persisted`] decides which document runs,
//! after authentication and before anything executes.

use std::io::Write as _;

use bytes::Bytes;
use deadpool_postgres::Pool;
use http::header::{ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use http::{HeaderValue, Method, Request as HttpRequest, Response, StatusCode};

use super::Engine;
use super::execute::{self, Outcome, Request};
use super::persisted::PersistedQuery;
use super::response::{ErrorCode, GqlError, errors_only};
use crate::ratelimit::{self, RateLimiter};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// Which media type the response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphqlResponse,
    Json,
}

impl MediaType {
    fn header(self) -> HeaderValue {
        match self {
            MediaType::GraphqlResponse => {
                HeaderValue::from_static("application/graphql-response+json; charset=utf-8")
            }
            MediaType::Json => HeaderValue::from_static("application/json; charset=utf-8"),
        }
    }
}

fn negotiate(accept: Option<&str>) -> Option<MediaType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(MediaType::Json);
    };
    let mut json = false;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let media = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = it.any(|p| {
            let p = p.trim();
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        if q_zero {
            continue;
        }
        match media.as_str() {
            GRAPHQL_RESPONSE => return Some(MediaType::GraphqlResponse),
            JSON | "application/*" | "*/*" => json = true,
            _ => {}
        }
    }
    json.then_some(MediaType::Json)
}

fn respond(
    status: StatusCode,
    media: MediaType,
    body: String,
    gzip_ok: bool,
    min: usize,
) -> Response<Bytes> {
    let mut builder = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, media.header())
        .header(VARY, "Accept, Accept-Encoding");
    let body = if gzip_ok && body.len() >= min {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4 + 64),
            flate2::Compression::fast(),
        );
        match enc.write_all(body.as_bytes()).and_then(|_| enc.finish()) {
            Ok(z) => {
                builder = builder.header(CONTENT_ENCODING, "gzip");
                Bytes::from(z)
            }
            Err(_) => Bytes::from(body),
        }
    } else {
        Bytes::from(body)
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

fn request_failure(
    engine: &Engine,
    status: StatusCode,
    media: MediaType,
    message: &str,
    code: ErrorCode,
) -> Response<Bytes> {
    if let Some(m) = &engine.metrics {
        m.errors_total.with_label_values(&[code.as_str()]).inc();
        m.operations_total
            .with_label_values(&["invalid", "anonymous", "error"])
            .inc();
    }
    let mut r = respond(
        status,
        media,
        errors_only(&[GqlError::new(message, code)]),
        false,
        usize::MAX,
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, POST"));
    }
    r
}

/// One key or value of an `application/x-www-form-urlencoded` query string: `+` is a space,
/// `%XX` a byte (decoded by `percent-encoding`), and the bytes must be UTF-8. A `%` not
/// followed by two hex digits is refused rather than kept literally, as the WHATWG parser
/// would: such a request is malformed and answers 400.
fn form_decode(s: &str) -> Option<String> {
    let malformed_escape = s.split('%').skip(1).any(|rest| {
        !rest
            .as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed_escape {
        return None;
    }
    // `+` is replaced before decoding, so an encoded `%2B` stays a plus sign.
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// A request as sent: the document may be missing when `extensions.persistedQuery` names it
/// by hash ([`super::persisted::resolve`] turns it into a [`Request`]).
#[derive(Debug, Default)]
struct Sent {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<serde_json::Value>,
    persisted: Option<PersistedQuery>,
}

impl Sent {
    fn with_extensions(mut self, extensions: Option<&serde_json::Value>) -> Result<Sent, String> {
        match extensions {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(ext)) => {
                self.persisted = PersistedQuery::from_extensions(ext)?;
            }
            Some(_) => return Err("`extensions` must be an object".into()),
        }
        Ok(self)
    }

    fn into_request(self) -> Option<Request> {
        Some(Request {
            query: self.query?,
            operation_name: self.operation_name,
            variables: self.variables,
        })
    }
}

/// Parses a request body into a [`Sent`]; errors are messages for a 400.
fn from_json(body: &[u8]) -> Result<Sent, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not valid UTF-8".to_owned())?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the body is not valid JSON ({e})"))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err("the body must be a JSON object".into());
    };
    let query = match map.remove("query") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(q)) => Some(q),
        Some(_) => return Err("`query` must be a string".into()),
    };
    let operation_name = match map.remove("operationName") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err("`operationName` must be a string".into()),
    };
    let variables = match map.remove("variables") {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => Some(v),
        Some(_) => return Err("`variables` must be an object".into()),
    };
    let sent = Sent {
        query,
        operation_name,
        variables,
        persisted: None,
    }
    .with_extensions(map.get("extensions"))?;
    if sent.query.is_none() && sent.persisted.is_none() {
        return Err("`query` is missing".into());
    }
    Ok(sent)
}

/// A `POST` body as the server reads it: the request, or `None` when the body names a
/// persisted document by hash only (resolved later, against the registry); errors are the
/// 400 messages. Public for the fuzz targets (`fuzz/`).
pub fn parse_body(body: &[u8]) -> Result<Option<Request>, String> {
    from_json(body).map(Sent::into_request)
}

/// The `GET` form of [`parse_body`]: a query string.
pub fn parse_query_string(qs: &str) -> Result<Option<Request>, String> {
    from_query_string(qs).map(Sent::into_request)
}

/// Parses GET parameters into a [`Sent`] (`extensions` is JSON, as Apollo's clients send it).
fn from_query_string(qs: &str) -> Result<Sent, String> {
    let mut req = Sent::default();
    let mut extensions = None;
    for pair in qs.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = form_decode(k).ok_or("a query parameter is not valid percent-encoded UTF-8")?;
        let v = form_decode(v).ok_or("a query parameter is not valid percent-encoded UTF-8")?;
        match k.as_str() {
            "query" => req.query = Some(v),
            "operationName" if !v.is_empty() => req.operation_name = Some(v),
            "variables" if !v.is_empty() => {
                let parsed: serde_json::Value = serde_json::from_str(&v)
                    .map_err(|_| "`variables` is not valid JSON".to_owned())?;
                match parsed {
                    serde_json::Value::Object(_) => req.variables = Some(parsed),
                    serde_json::Value::Null => {}
                    _ => return Err("`variables` must be a JSON object".into()),
                }
            }
            "extensions" if !v.is_empty() => {
                extensions = Some(
                    serde_json::from_str::<serde_json::Value>(&v)
                        .map_err(|_| "`extensions` is not valid JSON".to_owned())?,
                );
            }
            _ => {}
        }
    }
    let req = req.with_extensions(extensions.as_ref())?;
    if req.query.is_none() && req.persisted.is_none() {
        return Err("the `query` parameter is missing".into());
    }
    Ok(req)
}

/// The answer to a request whose body exceeded `max_body_bytes` before it was read whole
/// (the server stops reading at the limit instead of buffering an unbounded body).
pub fn body_too_large(engine: &Engine, headers: &http::HeaderMap) -> Response<Bytes> {
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    request_failure(
        engine,
        StatusCode::PAYLOAD_TOO_LARGE,
        negotiate(accept).unwrap_or(MediaType::Json),
        &format!(
            "the body is larger than the limit of {} bytes",
            engine.limits.max_body_bytes
        ),
        ErrorCode::PayloadTooLarge,
    )
}

/// The answer to a request refused by authentication: 401 with the RFC 6750 challenge, or
/// 403 for a valid token whose role may not be used; the body is a GraphQL error.
fn refused(engine: &Engine, media: MediaType, e: &crate::auth::AuthError) -> Response<Bytes> {
    let (status, code) = if e.is_forbidden() {
        (StatusCode::FORBIDDEN, ErrorCode::Forbidden)
    } else {
        (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated)
    };
    let mut r = request_failure(engine, status, media, &e.to_string(), code);
    if let (StatusCode::UNAUTHORIZED, Ok(v)) = (status, HeaderValue::from_str(&e.challenge())) {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Answers one request to the GraphQL endpoint. With `auth`, the request is authenticated
/// before anything else is done with it.
pub async fn handle(
    engine: &Engine,
    pool: &Pool,
    auth: Option<&crate::auth::Authenticator>,
    limiter: Option<&RateLimiter>,
    req: HttpRequest<Bytes>,
) -> Response<Bytes> {
    let headers = req.headers();
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let gzip_ok = super::accept_encoding::accepts_gzip(
        headers
            .get_all(ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let Some(media) = negotiate(accept) else {
        return request_failure(
            engine,
            StatusCode::NOT_ACCEPTABLE,
            MediaType::Json,
            "the Accept header allows neither application/graphql-response+json nor application/json",
            ErrorCode::NotAcceptable,
        );
    };
    let identity = match auth {
        None => crate::auth::Identity::unrestricted(),
        Some(auth) => {
            let header = match headers.get(http::header::AUTHORIZATION) {
                None => None,
                Some(v) => match v.to_str() {
                    Ok(v) => Some(v),
                    Err(_) => {
                        return refused(engine, media, &crate::auth::AuthError::Malformed);
                    }
                },
            };
            match auth.authenticate(header, crate::auth::Door::Http).await {
                Ok(id) => id,
                Err(e) => return refused(engine, media, &e),
            }
        }
    };
    // Spent before the body is parsed: a flood costs no more than this check.
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    let caller = limiter.map(|rl| {
        let peer = req
            .extensions()
            .get::<ratelimit::Peer>()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.0);
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        ratelimit::Caller {
            identity: &identity,
            token,
            addr: rl.client_addr(peer, forwarded),
        }
    });
    let mut checked = ratelimit::Checked::default();
    if let (Some(rl), Some(caller)) = (limiter, &caller) {
        match rl.admit(caller, ratelimit::Scope::Request).await {
            ratelimit::Verdict::Allowed(c) => checked = c,
            refused => return over_limit(engine, media, &refused),
        }
    }
    let limits = engine.limits;
    if req.body().len() > limits.max_body_bytes {
        return request_failure(
            engine,
            StatusCode::PAYLOAD_TOO_LARGE,
            media,
            &format!(
                "the body is larger than the limit of {} bytes",
                limits.max_body_bytes
            ),
            ErrorCode::PayloadTooLarge,
        );
    }
    let (parsed, allow_mutation) = match *req.method() {
        Method::POST => {
            let ct = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                });
            match ct.as_deref() {
                Some(JSON) | Some(GRAPHQL_RESPONSE) => {}
                Some(_) | None => {
                    return request_failure(
                        engine,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        media,
                        "POST requests must have Content-Type: application/json",
                        ErrorCode::UnsupportedMediaType,
                    );
                }
            }
            (from_json(req.body()), true)
        }
        Method::GET => (from_query_string(req.uri().query().unwrap_or("")), false),
        _ => {
            return request_failure(
                engine,
                StatusCode::METHOD_NOT_ALLOWED,
                media,
                "use GET or POST",
                ErrorCode::MethodNotAllowed,
            );
        }
    };
    let sent = match parsed {
        Ok(r) => r,
        Err(msg) => {
            return request_failure(
                engine,
                StatusCode::BAD_REQUEST,
                media,
                &msg,
                ErrorCode::BadRequest,
            );
        }
    };
    let resolved = super::persisted::resolve(
        engine.documents.as_deref(),
        sent.query,
        sent.persisted.as_ref(),
        &identity,
    );
    let outcome = resolved
        .as_ref()
        .map_or_else(|r| Some(r.outcome), |r| r.outcome);
    if let (Some(m), Some(outcome)) = (&engine.metrics, outcome) {
        m.persisted_queries_total
            .with_label_values(&[outcome])
            .inc();
    }
    let gql = match resolved {
        Ok(r) => Request {
            query: r.query,
            operation_name: sent.operation_name,
            variables: sent.variables,
        },
        Err(refusal) => {
            // Apollo's clients read PERSISTED_QUERY_NOT_FOUND / _NOT_SUPPORTED from a 200.
            let status = if refusal.code == ErrorCode::BadRequest {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            return request_failure(engine, status, media, refusal.message, refusal.code);
        }
    };
    // The mutation budget is asked only once the document is known to be a mutation.
    let mutation_verdict = std::sync::Mutex::new(None);
    let gate_fn;
    let gate: Option<execute::MutationGate<'_>> =
        match (limiter.filter(|rl| rl.limits_mutations()), caller.as_ref()) {
            (Some(rl), Some(caller)) => {
                let verdict = &mutation_verdict;
                gate_fn = move || -> futures_util::future::BoxFuture<'_, Result<(), GqlError>> {
                    Box::pin(async move {
                        let v = rl.admit(caller, ratelimit::Scope::Mutation).await;
                        let refused = match &v {
                            ratelimit::Verdict::Allowed(_) => None,
                            other => Some(refusal(other)),
                        };
                        *verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                        refused.map_or(Ok(()), Err)
                    })
                };
                Some(&gate_fn)
            }
            _ => None,
        };
    let done = engine
        .execute_gated(pool, &identity, &gql, allow_mutation, gate)
        .await;
    let verdict = mutation_verdict
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match verdict {
        Some(ratelimit::Verdict::Allowed(c)) => checked.extend(c),
        Some(refused) => return over_limit(engine, media, &refused),
        None => {}
    }
    let status = match (done.outcome, media) {
        (Outcome::MutationNotAllowed, _) => StatusCode::METHOD_NOT_ALLOWED,
        (Outcome::RequestError, MediaType::GraphqlResponse) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let mut resp = respond(status, media, done.body, gzip_ok, limits.gzip_min_bytes);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
    }
    rate_limit_headers(&mut resp, &checked);
    resp
}

/// The GraphQL error of a refused budget or an unreachable store.
fn refusal(v: &ratelimit::Verdict) -> GqlError {
    match v {
        ratelimit::Verdict::Limited(c) => GqlError::new(
            format!(
                "rate limit exceeded ({} budget); retry in {} s",
                c.refused_by().unwrap_or("client"),
                c.retry_after_secs()
            ),
            ErrorCode::RateLimited,
        ),
        _ => GqlError::new(
            "the rate-limit store is unreachable; try again shortly",
            ErrorCode::ServiceUnavailable,
        ),
    }
}

/// 429 with `Retry-After` and the budgets, or 503 when the store is down and requests are
/// refused meanwhile. Nothing ran.
fn over_limit(engine: &Engine, media: MediaType, v: &ratelimit::Verdict) -> Response<Bytes> {
    let e = refusal(v);
    let (status, retry_after) = match v {
        ratelimit::Verdict::Limited(c) => (StatusCode::TOO_MANY_REQUESTS, c.retry_after_secs()),
        _ => (StatusCode::SERVICE_UNAVAILABLE, 1),
    };
    let code = match v {
        ratelimit::Verdict::Limited(_) => ErrorCode::RateLimited,
        _ => ErrorCode::ServiceUnavailable,
    };
    let mut r = request_failure(engine, status, media, &e.message, code);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    if let ratelimit::Verdict::Limited(c) = v {
        rate_limit_headers(&mut r, c);
    }
    r
}

fn rate_limit_headers(resp: &mut Response<Bytes>, checked: &ratelimit::Checked) {
    for (name, value) in [
        ("ratelimit-policy", checked.policy_header()),
        ("ratelimit", checked.state_header()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            resp.headers_mut().insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate(None), Some(MediaType::Json));
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(negotiate(Some("*/*")), Some(MediaType::Json));
        assert_eq!(negotiate(Some("text/html")), None);
    }

    #[test]
    fn percent() {
        assert_eq!(form_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%ff"), None);
        assert_eq!(form_decode("1%2B1+%3D+2").as_deref(), Some("1+1 = 2"));
        assert_eq!(form_decode("caf%C3%A9%e2%82%ac").as_deref(), Some("café€"));
        assert_eq!(form_decode("caf%C3").as_deref(), None);
        assert_eq!(form_decode("%4"), None);
        assert_eq!(form_decode("50%"), None);
        assert_eq!(form_decode("%%41"), None);
        assert_eq!(form_decode("").as_deref(), Some(""));
    }
}
