//! One request on a pooled connection, the same for both doors (HTTP GraphQL and Flight).
//!
//! [`RequestContext`] is what a request's identity means to PostgreSQL: a role to switch to
//! (`SET LOCAL ROLE`, PostgREST's model) and transaction-local settings
//! (`set_config(name, value, true)`). [`crate::auth`] builds it from a verified token for
//! both doors, and this module is the one place that turns it into session state:
//! [`Session`] for reads, [`apply`] inside a transaction the caller owns (mutations).
//!
//! A [`Session`] owns the connection while its statements run. An empty context opens no
//! transaction, so an anonymous read stays one round trip. [`Session::finish`] ends the
//! transaction and returns the connection to the pool; a session dropped before that (the
//! client went away, an error, shutdown) has its running statement cancelled on the server
//! and its connection closed: dropping a row stream alone would let PostgreSQL run the query
//! to completion, and a connection must never go back to the pool mid-result or
//! mid-transaction.

use deadpool_postgres::Object;

/// The database side of one request's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The role the request's statements run as (`None`: the pool's login role).
    role: Option<String>,
    /// `(setting, value)` pairs, set transaction-locally before the request's statements.
    settings: Vec<(String, String)>,
}

impl RequestContext {
    /// A request with no identity: nothing is set.
    pub fn anonymous() -> RequestContext {
        RequestContext::default()
    }

    /// Adds a transaction-local setting (`app.user_id`, `request.jwt.claims`, …).
    pub fn with_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Runs the request as `role` (one of `auth.db_roles`; the login role must be granted
    /// it). Applied before the settings, in the same statement.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// The value of setting `name`, if set.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The role (as setting `role`) and the settings, in the order they are applied.
    fn pairs(&self) -> (Vec<&str>, Vec<&str>) {
        self.role
            .iter()
            .map(|r| ("role", r.as_str()))
            .chain(self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .unzip()
    }

    /// True when there is nothing to set, so no transaction is needed.
    pub fn is_empty(&self) -> bool {
        self.role.is_none() && self.settings.is_empty()
    }
}

/// The role and all settings in one statement: one round trip whatever their number.
/// `set_config('role', …, true)` is `SET LOCAL ROLE` with the name as a parameter; the
/// rows are applied in order, the role first.
const APPLY_SQL: &str = "SELECT set_config(s.name, s.value, true) \
                         FROM unnest($1::text[], $2::text[]) AS s(name, value)";

/// Applies `ctx` inside the caller's open transaction.
pub async fn apply<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    ctx: &RequestContext,
) -> Result<(), tokio_postgres::Error> {
    if ctx.is_empty() {
        return Ok(());
    }
    let (names, values) = ctx.pairs();
    // Typed parameters: no prepare round trip (the unnamed statement is parsed with the
    // execution, one round trip in all).
    let text_array = tokio_postgres::types::Type::TEXT_ARRAY;
    client
        .query_typed(
            APPLY_SQL,
            &[(&names, text_array.clone()), (&values, text_array)],
        )
        .await?;
    Ok(())
}

/// A pooled connection serving one request (see the module docs).
pub struct Session {
    client: Option<Object>,
    /// `APPLY_SQL` prepared on this connection, when `ctx` sets anything.
    apply: Option<tokio_postgres::Statement>,
}

impl Session {
    /// Takes `client` for a request, applying `ctx` in a transaction when it sets anything.
    pub async fn start(
        client: Object,
        ctx: &RequestContext,
    ) -> Result<Session, tokio_postgres::Error> {
        let session = Session::open(client, ctx).await?;
        session.setup(ctx).await?;
        Ok(session)
    }

    /// Takes `client` for a request; [`Session::setup`] must be polled before (or together
    /// with, first) the request's statements. Polled together, the `BEGIN`, the settings,
    /// the statements and [`Session::commit`] go to PostgreSQL in one flight:
    /// tokio-postgres sends a request on its first poll, in the order of first polls.
    ///
    /// The settings statement is prepared here (once per connection, from its statement
    /// cache) so that `setup` sends everything on its first poll: a prepare round trip
    /// inside `setup` would let statements polled after it reach PostgreSQL before the
    /// settings.
    pub async fn open(
        client: Object,
        ctx: &RequestContext,
    ) -> Result<Session, tokio_postgres::Error> {
        let apply = if ctx.is_empty() {
            None
        } else {
            let text_array = tokio_postgres::types::Type::TEXT_ARRAY;
            Some(
                client
                    .prepare_typed_cached(APPLY_SQL, &[text_array.clone(), text_array])
                    .await?,
            )
        };
        Ok(Session {
            client: Some(client),
            apply,
        })
    }

    /// `BEGIN` and `ctx`'s role and settings, sent on the first poll (nothing when `ctx`
    /// is empty).
    pub async fn setup(&self, ctx: &RequestContext) -> Result<(), tokio_postgres::Error> {
        let Some(apply) = &self.apply else {
            return Ok(());
        };
        let client = self.client();
        let (names, values) = ctx.pairs();
        // `try_join` polls its first future first: BEGIN is sent ahead of the settings.
        futures_util::future::try_join(
            client.batch_execute("BEGIN"),
            client.query(apply, &[&names, &values]),
        )
        .await?;
        Ok(())
    }

    /// The connection, for the request's statements.
    pub fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a session holds its connection until finished or dropped")
    }

    /// `COMMIT` of the request's transaction, if any, sent on the first poll: polled once
    /// after every statement of the request was first polled, it shares their flight. A
    /// read whose statement failed leaves the transaction aborted, and PostgreSQL answers
    /// that `COMMIT` with a rollback, which is all a read needs. [`Session::release`]
    /// then returns the connection.
    pub async fn commit(&self) -> Result<(), tokio_postgres::Error> {
        if self.apply.is_some() {
            self.client().batch_execute("COMMIT").await?;
        }
        Ok(())
    }

    /// Returns the connection to the pool after a successful [`Session::commit`].
    pub fn release(mut self) {
        drop(self.client.take());
    }

    /// Ends the request normally: commits its transaction, if any, and returns the
    /// connection to the pool.
    pub async fn finish(self) -> Result<(), tokio_postgres::Error> {
        self.commit().await?;
        self.release();
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            abandon(client);
        }
    }
}

/// A connection that, dropped before [`Held::release`], cancels whatever it is running and
/// is closed instead of pooled: for work outside a [`Session`] (a mutation's transaction)
/// that must not run on after its request went away.
pub struct Held(Option<Object>);

impl Held {
    pub fn new(client: Object) -> Held {
        Held(Some(client))
    }

    pub fn client(&mut self) -> &mut Object {
        self.0
            .as_mut()
            .expect("a held connection is there until released or dropped")
    }

    /// Returns the connection to the pool: the work ended normally.
    pub fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            abandon(client);
        }
    }
}

/// Cancels whatever `client` is running and closes it instead of pooling it.
pub fn abandon(client: Object) {
    let token = client.cancel_token();
    // A drop outside a runtime (process exit) has nothing left to cancel.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            if let Err(e) = super::cancel_query(token).await {
                tracing::debug!(error = %e, "cancelling the PostgreSQL query failed");
            }
        });
    }
    drop(Object::take(client));
}
