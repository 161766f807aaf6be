//! The gRPC `FlightService`: authenticates every call, resolves descriptors and tickets,
//! and wires the producers ([`stream`](super::stream), [`graphql`](super::graphql),
//! [`put`](super::put)) to the Flight encoder, recording the `fraiseql_flight_*` metrics.
//!
//! Descriptors: a path `["va_orders"]` names a registered view or table (all columns),
//! `["events"]` the change log, or a GraphQL list query advertised by the
//! [`GraphQLSource`]; a command descriptor is a ticket document. Every FlightInfo has one
//! endpoint, on this server, whose ticket is the JSON ticket to pass to DoGet.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError as ArrowFlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult,
    Ticket as FlightTicket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{self as flight_auth, Tokens};
use super::config::{ClientPrincipal, RoleAccess};
use super::graphql::{GraphQLSource, arrow_schema as graphql_schema, spawn_rows};
use super::plan::{events_schema, plan_view};
use super::registry::Registry;
use super::stream::{BatchResult, Follow, Producer, spawn_events, spawn_sql};
use super::ticket::{self, Ticket, TicketError};
use crate::auth::{Authenticator, Door, Identity};
use crate::db::changelog::Position;
use crate::metrics::FlightMetrics;
use std::collections::BTreeMap;

impl From<TicketError> for Status {
    fn from(e: TicketError) -> Status {
        match e {
            TicketError::UnknownView(_) => Status::not_found(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

/// Everything the service needs, shared by all calls.
pub struct FlightState {
    pub pool: deadpool_postgres::Pool,
    pub registry: Arc<Registry>,
    pub tokens: Tokens,
    /// The verifiers of `[auth]`: JWTs are accepted besides the static tokens.
    pub auth: Option<Arc<Authenticator>>,
    /// `[flight.roles]`: what each token role may read and write.
    pub roles: BTreeMap<String, RoleAccess>,
    /// `[[flight.client_principals]]`: client certificate names and their roles.
    pub principals: Vec<ClientPrincipal>,
    pub metrics: FlightMetrics,
    pub graphql: Option<Arc<dyn GraphQLSource>>,
    pub wake: Option<Arc<Notify>>,
    pub shutdown: CancellationToken,
    pub batch_rows: usize,
    pub max_ticket_bytes: usize,
    pub put_tables: Vec<String>,
    pub follow_poll: Duration,
    /// `[rate_limit]`: the `flight` and `global` budgets each stream or upload spends.
    pub rate_limit: Option<Arc<crate::ratelimit::RateLimiter>>,
}

#[derive(Clone)]
pub struct FraiseFlightService {
    state: Arc<FlightState>,
}

type Stream_<T> = BoxStream<'static, Result<T, Status>>;

/// The name of the change-log flight in path descriptors.
pub const EVENTS_PATH: &str = "events";

impl FraiseFlightService {
    pub fn new(state: FlightState) -> FraiseFlightService {
        FraiseFlightService {
            state: Arc::new(state),
        }
    }

    /// Checks the caller and returns who it is: a static service token is unrestricted;
    /// anything else is a JWT for the authenticator of `[auth]` (when configured). Nothing
    /// reaches the database before this answers.
    async fn authorize(
        &self,
        metadata: &MetadataMap,
        certs: Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>,
    ) -> Result<Identity, Status> {
        let header = metadata.get("authorization");
        // No token but a verified client certificate (mutual TLS) of a configured principal.
        if header.is_none()
            && let Some(p) = certs.and_then(|c| self.principal(&c))
        {
            let db_roles = self
                .state
                .auth
                .as_ref()
                .map(|a| a.config().db_roles.clone())
                .unwrap_or_default();
            return Identity::principal(&p.subject, &p.role, &db_roles)
                .map_err(|e| self.refused(&e));
        }
        let value = match header.map(|h| h.to_str()) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return Err(Status::from(flight_auth::AuthError::Malformed)),
        };
        if let Some(token) = value.and_then(crate::auth::bearer)
            && self.state.tokens.accepts(token.as_bytes())
        {
            return Ok(Identity::unrestricted());
        }
        let Some(auth) = &self.state.auth else {
            let e = self
                .state
                .tokens
                .check(metadata)
                .err()
                .unwrap_or(flight_auth::AuthError::InvalidToken);
            tracing::debug!(error = %e, "flight call refused");
            return Err(Status::from(e));
        };
        auth.authenticate(value, Door::Flight)
            .await
            .map_err(|e| self.refused(&e))
    }

    /// Spends the caller's Flight budget: `RESOURCE_EXHAUSTED` (with `retry-after` seconds
    /// in the metadata) when it is spent, `UNAVAILABLE` when the store is down and calls are
    /// refused meanwhile. Nothing runs for a refused call.
    async fn admit<T>(&self, identity: &Identity, request: &Request<T>) -> Result<(), Status> {
        use crate::ratelimit::{Caller, Scope, Verdict};
        let Some(rl) = &self.state.rate_limit else {
            return Ok(());
        };
        let peer = request
            .remote_addr()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
        let forwarded = request
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer);
        let caller = Caller {
            identity,
            token,
            addr: rl.client_addr(peer, forwarded),
        };
        match rl.admit(&caller, Scope::Flight).await {
            Verdict::Allowed(_) => Ok(()),
            Verdict::Limited(c) => {
                let secs = c.retry_after_secs();
                let mut status = Status::resource_exhausted(format!(
                    "rate limit exceeded ({} budget); retry in {secs} s",
                    c.refused_by().unwrap_or("flight")
                ));
                status.metadata_mut().insert(
                    "retry-after",
                    secs.to_string()
                        .parse()
                        .map_err(|_| Status::internal("retry-after"))?,
                );
                Err(status)
            }
            Verdict::Unavailable => Err(Status::unavailable(
                "the rate-limit store is unreachable; try again shortly",
            )),
        }
    }

    /// The first configured principal the client's (leaf) certificate names: its subject's
    /// common name or a subject alternative name. The certificate was verified against
    /// `client_ca` by the TLS layer; an unparsable one names nobody.
    fn principal(
        &self,
        certs: &[tonic::transport::CertificateDer<'static>],
    ) -> Option<&ClientPrincipal> {
        if self.state.principals.is_empty() {
            return None;
        }
        let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(|cn| format!("CN={cn}"))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            use x509_parser::extensions::GeneralName;
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => names.push(format!("URI:{u}")),
                    GeneralName::RFC822Name(e) => names.push(format!("email:{e}")),
                    _ => {}
                }
            }
        }
        self.state
            .principals
            .iter()
            .find(|p| names.contains(&p.subject))
    }

    /// The gRPC answer to an authentication failure: `PERMISSION_DENIED` for a valid token
    /// that may not be used (counted as a refusal of its role), else `UNAUTHENTICATED`.
    fn refused(&self, e: &crate::auth::AuthError) -> Status {
        tracing::debug!(error = %e, "flight call refused");
        if e.is_forbidden() {
            self.count_denied("other");
            Status::permission_denied(e.to_string())
        } else {
            Status::unauthenticated(e.to_string())
        }
    }

    /// Counts a refusal in `fraiseql_auth_denied_total{door="flight"}`. Role values come
    /// from tokens, so only configured roles become labels (bounded cardinality).
    fn count_denied(&self, role: &str) {
        let known = self.state.roles.contains_key(role)
            || self.state.auth.as_ref().is_some_and(|a| {
                let c = a.config();
                c.db_roles.iter().any(|r| r == role) || c.anonymous_role == role
            });
        let label = if known { role } else { "other" };
        crate::metrics::metrics()
            .auth
            .denied
            .with_label_values(&["flight", label])
            .inc();
    }

    /// The allow-lists of a restricted identity's role (`None` for unrestricted ones).
    fn access(&self, identity: &Identity) -> Option<&RoleAccess> {
        static NOTHING: std::sync::OnceLock<RoleAccess> = std::sync::OnceLock::new();
        if identity.is_unrestricted() {
            return None;
        }
        Some(
            self.state
                .roles
                .get(identity.role())
                .unwrap_or_else(|| NOTHING.get_or_init(RoleAccess::default)),
        )
    }

    fn deny(&self, identity: &Identity, what: String) -> Status {
        self.count_denied(identity.role());
        Status::permission_denied(format!(
            "{what} is not allowed for this token's role (see flight.roles)"
        ))
    }

    /// May `identity` read view or table `name`?
    fn check_view(&self, identity: &Identity, name: &str) -> Result<(), Status> {
        match self.access(identity) {
            Some(a) if !a.may_read(name) => Err(self.deny(identity, format!("reading {name:?}"))),
            _ => Ok(()),
        }
    }

    /// May `identity` read the change log of `entity` (`None`: all of it)?
    fn check_events(&self, identity: &Identity, entity: Option<&str>) -> Result<(), Status> {
        match self.access(identity) {
            Some(a) if !a.may_read_events(entity) => Err(self.deny(
                identity,
                match entity {
                    Some(e) => format!("reading the events of {e:?}"),
                    None => "reading the whole change log (name an entity)".to_string(),
                },
            )),
            _ => Ok(()),
        }
    }

    fn graphql(&self) -> Result<&Arc<dyn GraphQLSource>, Status> {
        self.state.graphql.as_ref().ok_or_else(|| {
            Status::unimplemented("graphql tickets are not available: no GraphQL schema is loaded")
        })
    }

    /// Views need the registry; before its first load (database down at startup) the
    /// answer is "try again", not "no such view".
    fn require_registry(&self) -> Result<(), Status> {
        if self.state.registry.is_loaded() {
            Ok(())
        } else {
            Err(Status::unavailable(
                "the schema registry is not loaded yet (is the database reachable?)",
            ))
        }
    }

    fn parse_ticket(&self, bytes: &[u8]) -> Result<Ticket, Status> {
        Ok(ticket::parse(bytes, self.state.max_ticket_bytes)?)
    }

    /// The schema a ticket returns, without running it.
    async fn ticket_schema(&self, identity: &Identity, t: &Ticket) -> Result<SchemaRef, Status> {
        match t {
            Ticket::View(v) => {
                self.check_view(identity, &v.view)?;
                self.require_registry()?;
                Ok(plan_view(v, &self.state.registry)?.schema)
            }
            Ticket::Events(e) => {
                self.check_events(identity, e.entity.as_deref())?;
                Ok(events_schema())
            }
            Ticket::GraphQL(g) => {
                let empty = Map::new();
                let fields = self
                    .graphql()?
                    .shape(
                        identity,
                        &g.query,
                        g.variables.as_ref().unwrap_or(&empty),
                        g.operation_name.as_deref(),
                    )
                    .await?;
                Ok(graphql_schema(&fields))
            }
        }
    }

    /// Resolves a descriptor to (ticket bytes, schema).
    async fn resolve(
        &self,
        identity: &Identity,
        d: &FlightDescriptor,
    ) -> Result<(Bytes, SchemaRef), Status> {
        match DescriptorType::try_from(d.r#type) {
            Ok(DescriptorType::Path) => {
                self.require_registry()?;
                let [name] = d.path.as_slice() else {
                    return Err(Status::invalid_argument(
                        "a path descriptor has one element: a view, table, \"events\" or a named GraphQL query",
                    ));
                };
                if let Some(rel) = self.state.registry.get(name) {
                    self.check_view(identity, name)?;
                    let t = json!({"type": "view", "view": rel.name}).to_string();
                    return Ok((Bytes::from(t), rel.arrow_schema.clone()));
                }
                if name == EVENTS_PATH {
                    self.check_events(identity, None)?;
                    let t = json!({"type": "events"}).to_string();
                    return Ok((Bytes::from(t), events_schema()));
                }
                if let Some(src) = &self.state.graphql
                    && let Some(q) = src.list_queries().into_iter().find(|q| q.name == *name)
                {
                    let t = json!({"type": "graphql", "query": q.query}).to_string();
                    let ticket = self.parse_ticket(t.as_bytes())?;
                    let schema = self.ticket_schema(identity, &ticket).await?;
                    return Ok((Bytes::from(t), schema));
                }
                Err(Status::not_found(format!(
                    "no flight named {name:?}: not a va_/ta_ view or table, \"events\", or a GraphQL list query"
                )))
            }
            Ok(DescriptorType::Cmd) => {
                let t = self.parse_ticket(&d.cmd)?;
                let schema = self.ticket_schema(identity, &t).await?;
                Ok((d.cmd.clone(), schema))
            }
            _ => Err(Status::invalid_argument("unknown descriptor type")),
        }
    }

    fn flight_info(
        descriptor: FlightDescriptor,
        ticket: Bytes,
        schema: &SchemaRef,
    ) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(FlightTicket::new(ticket)))
            .with_total_records(-1)
            .with_total_bytes(-1))
    }
}

/// Records how a DoGet stream ended. Dropped before the end (the client went away) counts
/// as failed; dropping also fires the stop token through the guard, cancelling the query.
struct StreamTracker {
    metrics: FlightMetrics,
    kind: &'static str,
    started: Instant,
    ended: bool,
    _stop: DropGuard,
}

impl StreamTracker {
    fn end(&mut self, ok: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        let counter = if ok {
            &self.metrics.streams_finished
        } else {
            &self.metrics.streams_failed
        };
        counter.with_label_values(&[self.kind]).inc();
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics.stream_duration.observe(secs);
        tracing::debug!(
            ticket = self.kind,
            ok,
            seconds = secs,
            "flight stream ended"
        );
    }
}

impl Drop for StreamTracker {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Turns the producer's batches into Flight data, counting rows and bytes. Each message of
/// a change-log batch carries its last row's position in `app_metadata`, as
/// `{"after": "<txid>:<pk>"}`: the events ticket's `after`, the resume point.
fn flight_stream(
    schema: SchemaRef,
    rx: mpsc::Receiver<BatchResult>,
    tracker: StreamTracker,
) -> Stream_<FlightData> {
    let metrics = tracker.metrics.clone();
    // Row positions in stream order, handed from the producer's batches to the encoder's
    // messages: the encoder splits a batch too large for one message, so each message takes
    // as many positions as it has rows.
    let positions = Arc::new(std::sync::Mutex::new(VecDeque::<Position>::new()));
    let queued = positions.clone();
    let batches = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(move |item: BatchResult| match item {
        Ok(b) => {
            metrics.rows_sent.inc_by(b.rows.num_rows() as u64);
            if !b.positions.is_empty() {
                lock(&queued).extend(b.positions);
            }
            Ok(b.rows)
        }
        Err(e) => Err(ArrowFlightError::Tonic(Box::new(Status::from(e)))),
    });
    let encoder = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_ok(move |mut fd| {
            if let Some(p) = last_position(&fd, &positions) {
                fd.app_metadata = Bytes::from(json!({ "after": p.to_string() }).to_string());
            }
            fd
        });
    Box::pin(TrackedStream {
        inner: Box::pin(encoder),
        tracker,
    })
}

fn lock(q: &std::sync::Mutex<VecDeque<Position>>) -> std::sync::MutexGuard<'_, VecDeque<Position>> {
    // The queue holds plain values: a panic elsewhere cannot leave it half-updated.
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a record-batch message's rows off the position queue; the last one is the
/// message's position. `None` for other messages and for streams without positions.
fn last_position(fd: &FlightData, q: &std::sync::Mutex<VecDeque<Position>>) -> Option<Position> {
    let mut q = lock(q);
    if q.is_empty() {
        return None;
    }
    let rows = arrow_ipc::root_as_message(&fd.data_header)
        .ok()?
        .header_as_record_batch()?
        .length();
    let rows = usize::try_from(rows).ok().filter(|&n| n > 0)?;
    let n = rows.min(q.len());
    q.drain(..n).next_back()
}

/// The DoGet response: Flight data with byte counting and end-of-stream bookkeeping.
struct TrackedStream<S> {
    inner: Pin<Box<S>>,
    tracker: StreamTracker,
}

impl<S> Stream for TrackedStream<S>
where
    S: Stream<Item = Result<FlightData, ArrowFlightError>> + Send,
{
    type Item = Result<FlightData, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.tracker.ended {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(fd))) => {
                let n = fd.data_header.len() + fd.data_body.len() + fd.app_metadata.len();
                self.tracker.metrics.bytes_sent.inc_by(n as u64);
                Poll::Ready(Some(Ok(fd)))
            }
            Poll::Ready(Some(Err(e))) => {
                // One error ends the stream.
                self.tracker.end(false);
                Poll::Ready(Some(Err(Status::from(e))))
            }
            Poll::Ready(None) => {
                self.tracker.end(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl FlightService for FraiseFlightService {
    type HandshakeStream = Stream_<HandshakeResponse>;
    type ListFlightsStream = Stream_<FlightInfo>;
    type DoGetStream = Stream_<FlightData>;
    type DoPutStream = Stream_<PutResult>;
    type DoExchangeStream = Stream_<FlightData>;
    type DoActionStream = Stream_<arrow_flight::Result>;
    type ListActionsStream = Stream_<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // A static token, or a JWT (as the bearer or as the Basic password, what pyarrow's
        // authenticate_basic_token and ADBC send): verified now, handed back as the bearer.
        let token = flight_auth::handshake_token(request.metadata())?;
        if !self.state.tokens.accepts(token.as_bytes()) {
            let Some(auth) = &self.state.auth else {
                return Err(Status::from(flight_auth::AuthError::InvalidToken));
            };
            auth.authenticate_token(&token, Door::Flight)
                .await
                .map_err(|e| self.refused(&e))?;
        }
        let bearer = format!("Bearer {token}");
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        };
        let mut response: Response<Self::HandshakeStream> =
            Response::new(stream::iter(vec![Ok(reply)]).boxed());
        response.metadata_mut().insert(
            "authorization",
            bearer
                .parse()
                .map_err(|_| Status::invalid_argument("token is not a valid header value"))?,
        );
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let identity = self
            .authorize(request.metadata(), request.peer_certs())
            .await?;
        // The criteria expression, when given, is a name prefix.
        let prefix = String::from_utf8_lossy(&request.get_ref().expression).to_string();
        let mut infos = Vec::new();
        // A restricted role sees only what it may read.
        let access = self.access(&identity);
        for (name, rel) in &self.state.registry.snapshot().relations {
            if !name.starts_with(&prefix) || access.is_some_and(|a| !a.may_read(name)) {
                continue;
            }
            let t = json!({"type": "view", "view": name}).to_string();
            infos.push(Self::flight_info(
                FlightDescriptor::new_path(vec![name.clone()]),
                Bytes::from(t),
                &rel.arrow_schema,
            )?);
        }
        if EVENTS_PATH.starts_with(&prefix) && access.is_none_or(|a| a.may_read_events(None)) {
            infos.push(Self::flight_info(
                FlightDescriptor::new_path(vec![EVENTS_PATH.into()]),
                Bytes::from(json!({"type": "events"}).to_string()),
                &events_schema(),
            )?);
        }
        if let Some(src) = &self.state.graphql {
            for q in src.list_queries() {
                if !q.name.starts_with(&prefix) {
                    continue;
                }
                let d = FlightDescriptor::new_path(vec![q.name.clone()]);
                match self.resolve(&identity, &d).await {
                    Ok((t, schema)) => infos.push(Self::flight_info(d, t, &schema)?),
                    // A query the schema's rules refuse this identity is not listed.
                    Err(e) if e.code() == tonic::Code::PermissionDenied => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Response::new(
            stream::iter(infos.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let identity = self
            .authorize(request.metadata(), request.peer_certs())
            .await?;
        let d = request.into_inner();
        let (t, schema) = self.resolve(&identity, &d).await?;
        Ok(Response::new(Self::flight_info(d, t, &schema)?))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.authorize(request.metadata(), request.peer_certs())
            .await?;
        Err(Status::unimplemented(
            "PollFlightInfo is not supported: use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let identity = self
            .authorize(request.metadata(), request.peer_certs())
            .await?;
        let (_, schema) = self.resolve(&identity, request.get_ref()).await?;
        let options = IpcWriteOptions::default();
        let result: SchemaResult = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<FlightTicket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let identity = self
            .authorize(request.metadata(), request.peer_certs())
            .await?;
        self.admit(&identity, &request).await?;
        let ctx = identity.request_context().clone();
        let s = &self.state;
        let t = self.parse_ticket(&request.get_ref().ticket)?;
        let kind = t.kind();
        let stop = s.shutdown.child_token();
        let producer = || Producer {
            batch_rows: s.batch_rows,
            stop: stop.clone(),
            shutdown: s.shutdown.clone(),
        };
        let (schema, rx) = match t {
            Ticket::View(v) => {
                self.check_view(&identity, &v.view)?;
                self.require_registry()?;
                let plan = plan_view(&v, &s.registry)?;
                let schema = plan.schema.clone();
                let rx = spawn_sql(s.pool.clone(), ctx, plan, producer());
                (schema, rx)
            }
            Ticket::Events(e) => {
                self.check_events(&identity, e.entity.as_deref())?;
                let rx = spawn_events(
                    s.pool.clone(),
                    ctx,
                    e,
                    Follow {
                        poll: s.follow_poll,
                        wake: s.wake.clone(),
                    },
                    producer(),
                );
                (events_schema(), rx)
            }
            Ticket::GraphQL(g) => {
                let empty = Map::new();
                let rows = self
                    .graphql()?
                    .execute(
                        &identity,
                        &g.query,
                        g.variables.as_ref().unwrap_or(&empty),
                        g.operation_name.as_deref(),
                    )
                    .await?;
                let schema = graphql_schema(&rows.fields);
                let rx = spawn_rows(rows, producer());
                (schema, rx)
            }
        };
        s.metrics.streams_started.with_label_values(&[kind]).inc();
        tracing::debug!(ticket = kind, "flight stream started");
        let tracker = StreamTracker {
            metrics: s.metrics.clone(),
            kind,
            started: Instant::now(),
            ended: false,
            _stop: stop.drop_guard(),
        };
        Ok(Response::new(flight_stream(schema, rx, tracker)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let identity = self
            .authorize(request.metadata(), request.peer_certs())
            .await?;
        self.admit(&identity, &request).await?;
        let mut incoming = request.into_inner();
        let Some(first) = incoming.message().await? else {
            return Err(Status::invalid_argument("DoPut received no data"));
        };
        let descriptor = first.flight_descriptor.clone();
        // A restricted role writes only its own put_tables (a subset of flight.put_tables).
        let s = &self.state;
        let allowed: Vec<String> = match self.access(&identity) {
            None => s.put_tables.clone(),
            Some(a) => {
                if let Some(d) = &descriptor {
                    let table = super::put::descriptor_table(d)?;
                    if !a.may_put(&table) {
                        return Err(self.deny(&identity, format!("DoPut to {table:?}")));
                    }
                }
                a.put_tables.clone()
            }
        };
        let data = stream::once(async move { Ok(first) })
            .chain(incoming)
            .map_err(ArrowFlightError::from)
            .boxed();
        let rows = super::put::put(
            descriptor,
            data,
            &s.registry,
            &allowed,
            &s.pool,
            identity.write_context(),
        )
        .await?;
        tracing::info!(rows, "flight DoPut committed");
        let result = PutResult {
            app_metadata: Bytes::from(json!({ "rows": rows }).to_string()),
        };
        Ok(Response::new(stream::iter(vec![Ok(result)]).boxed()))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.authorize(request.metadata(), request.peer_certs())
            .await?;
        Err(Status::unimplemented("DoExchange is not supported"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let identity = self
            .authorize(request.metadata(), request.peer_certs())
            .await?;
        let s = &self.state;
        let body: Value = match request.get_ref().r#type.as_str() {
            "health" => {
                let client = s
                    .pool
                    .get()
                    .await
                    .map_err(|e| Status::unavailable(format!("database unavailable: {e}")))?;
                client.simple_query("SELECT 1").await.map_err(|e| {
                    Status::unavailable(format!(
                        "database unavailable: {}",
                        super::registry::describe_pg(&e)
                    ))
                })?;
                json!({"status": "ok", "relations": s.registry.snapshot().relations.len()})
            }
            "refresh" => {
                // Reloading reads the catalog: for service accounts only.
                if !identity.is_unrestricted() {
                    return Err(self.deny(&identity, "the refresh action".to_string()));
                }
                let n = s
                    .registry
                    .refresh(&s.pool)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                json!({"relations": n})
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action {other:?} (supported: health, refresh)"
                )));
            }
        };
        let result = arrow_flight::Result::new(body.to_string());
        Ok(Response::new(stream::iter(vec![Ok(result)]).boxed()))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.authorize(request.metadata(), request.peer_certs())
            .await?;
        let actions = vec![
            ActionType {
                r#type: "health".into(),
                description: "Checks the database connection; returns {\"status\": \"ok\"}.".into(),
            },
            ActionType {
                r#type: "refresh".into(),
                description: "Reloads the schema registry of va_/ta_ views and tables.".into(),
            },
        ];
        Ok(Response::new(
            stream::iter(actions.into_iter().map(Ok)).boxed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    #[tokio::test]
    async fn each_message_of_a_split_batch_takes_its_own_rows_positions() {
        let schema = Arc::new(Schema::new(vec![Field::new("pk", DataType::Int64, false)]));
        let pks: Vec<i64> = (1..=1000).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(pks.clone()))],
        )
        .unwrap();
        let q = std::sync::Mutex::new(
            pks.iter()
                .map(|&pk| Position { txid: 7, pk })
                .collect::<VecDeque<_>>(),
        );
        // Small messages: the encoder splits the batch.
        let messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(1024)
            .build(stream::iter([Ok(batch)]))
            .try_collect()
            .await
            .unwrap();
        let mut seen = 0;
        let mut tagged = Vec::new();
        for fd in &messages {
            if let Some(p) = last_position(fd, &q) {
                let rows = arrow_ipc::root_as_message(&fd.data_header)
                    .unwrap()
                    .header_as_record_batch()
                    .unwrap()
                    .length();
                seen += rows;
                assert_eq!(p, Position { txid: 7, pk: seen });
                tagged.push(p);
            }
        }
        assert!(tagged.len() > 1, "the batch was split");
        assert_eq!(seen, 1000);
        assert!(lock(&q).is_empty());
    }
}
