//! The matcher: compiled observers, and which of them a change triggers.
//!
//! [`CompiledObservers::compile`] turns the `[[observers]]` config into observers with a
//! parsed condition and built actions (templates compiled, secrets read), reporting every
//! problem at once. The reader decodes each change-log row into a [`ChangeEvent`] and asks
//! [`CompiledObservers::jobs_for`] for the jobs to enqueue: one per action of every observer
//! whose entity, operation and condition match; each job carries its action's identity.
//! Workers find the action for a job with [`CompiledObservers::action_for`]: by that
//! identity, so a reordered config (or another config version) never runs a job as
//! another action.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::condition::{ChangeView, Condition};
use super::config::{self, ChangeOp, ConfigError, ObserverConfig, ObserverSettings, Problems};
use crate::actions::{Action, ActionDeps};
use crate::queue::Job;
use crate::queue::backoff::RetryPolicy;

/// One row of `fraiseql.tb_entity_change_log`, decoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChangeEvent {
    pub pk: i64,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub entity: String,
    pub entity_id: Option<Uuid>,
    pub op: ChangeOp,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub changed_fields: Option<Vec<String>>,
    pub actor: Option<String>,
    pub tenant_id: Option<String>,
    pub trace_id: Option<String>,
    /// What the API mutation that caused this row change returned, for its own entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutation: Option<Value>,
    /// A reference published in place of a change too large for one NATS message: the
    /// row images (`before`, `after`, `mutation`) are left out and read from the change
    /// log by `pk` (see `observers::nats_source`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl ChangeEvent {
    /// The event document given to templates and webhook bodies:
    /// `{"event": {id, pk, entity, entity_id, op, occurred_at, changed_fields, actor,
    /// tenant_id, trace_id, mutation}, "before": ..., "after": ...}`.
    pub fn document(&self) -> Value {
        json!({
            "event": {
                "id": self.id,
                "pk": self.pk,
                "entity": self.entity,
                "entity_id": self.entity_id,
                "op": self.op.as_str(),
                "occurred_at": self.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "changed_fields": self.changed_fields,
                "actor": self.actor,
                "tenant_id": self.tenant_id,
                "trace_id": self.trace_id,
                "mutation": self.mutation,
            },
            "before": self.before,
            "after": self.after,
        })
    }

    fn view(&self) -> ChangeView<'_> {
        ChangeView {
            before: self.before.as_ref().filter(|v| !v.is_null()),
            after: self.after.as_ref().filter(|v| !v.is_null()),
            changed_fields: self.changed_fields.as_deref(),
        }
    }
}

pub struct CompiledObserver {
    pub name: String,
    pub entity: String,
    pub events: Vec<ChangeOp>,
    pub condition: Option<Condition>,
    pub retry: RetryPolicy,
    pub actions: Vec<Arc<Action>>,
    /// `actions[i]`'s identity ([`crate::actions::ActionConfig::identity`]); an unnamed
    /// action identical to an earlier one of the same observer gets `-2`, `-3`… appended.
    pub action_ids: Vec<String>,
}

impl CompiledObserver {
    pub fn matches(&self, ev: &ChangeEvent) -> bool {
        ev.entity == self.entity
            && self.events.contains(&ev.op)
            && self.condition.as_ref().is_none_or(|c| c.eval(&ev.view()))
    }
}

pub struct CompiledObservers {
    observers: Vec<CompiledObserver>,
    by_entity: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, usize>,
}

impl CompiledObservers {
    /// Validates and builds every observer; all problems are reported together.
    pub fn compile(
        observers: &[ObserverConfig],
        settings: &ObserverSettings,
        known_entities: Option<&[String]>,
        deps: &ActionDeps,
    ) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        config::validate_into(&mut problems, observers, settings, known_entities);
        let mut compiled = Vec::new();
        for (i, o) in observers.iter().enumerate() {
            let who = config::label(i, o);
            let mut actions = Vec::new();
            let mut action_ids: Vec<String> = Vec::new();
            for (ai, a) in o.actions.iter().enumerate() {
                let base = a.identity();
                let mut id = base.clone();
                let mut n = 1;
                while action_ids.contains(&id) {
                    if a.name().is_some() {
                        problems.push(
                            &who,
                            format!("actions[{ai}].name"),
                            "another action of this observer has the same name",
                        );
                        break;
                    }
                    n += 1;
                    id = format!("{base}-{n}");
                }
                action_ids.push(id);
                match Action::build(&format!("{}/{ai}", o.name), a, deps) {
                    Ok(action) => actions.push(Arc::new(action)),
                    Err(e) => problems.push(
                        &who,
                        format!("actions[{ai}] ({}).{}", a.type_name(), e.key),
                        e.message,
                    ),
                }
            }
            compiled.push(CompiledObserver {
                name: o.name.clone(),
                entity: o.entity.clone(),
                events: o.events.clone(),
                // Already reported by validate_into when it does not parse.
                condition: o
                    .condition
                    .as_deref()
                    .and_then(|c| Condition::parse(c).ok()),
                retry: o.retry.policy(),
                actions,
                action_ids,
            });
        }
        problems.into_result()?;
        let mut by_entity: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, o) in compiled.iter().enumerate() {
            by_entity.entry(o.entity.clone()).or_default().push(i);
            by_name.insert(o.name.clone(), i);
        }
        Ok(CompiledObservers {
            observers: compiled,
            by_entity,
            by_name,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.observers.is_empty()
    }

    pub fn observers(&self) -> &[CompiledObserver] {
        &self.observers
    }

    pub fn get(&self, name: &str) -> Option<&CompiledObserver> {
        self.by_name.get(name).map(|&i| &self.observers[i])
    }

    /// The observer and action a job refers to (None if the config changed since it was
    /// enqueued, e.g. a dead letter retried after the observer was removed).
    pub fn action(
        &self,
        observer: &str,
        index: usize,
    ) -> Option<(&CompiledObserver, &Arc<Action>)> {
        let o = self.get(observer)?;
        Some((o, o.actions.get(index)?))
    }

    /// The observer and action `job` was made for: by its action identity, or for a job
    /// without one (queued by an older version) by position, provided the type matches. The
    /// error says what this process's configuration lacks.
    pub fn action_for(&self, job: &Job) -> Result<(&CompiledObserver, &Arc<Action>), String> {
        let Some(o) = self.get(&job.observer) else {
            return Err(format!(
                "observer \"{}\" is not in this process's configuration",
                job.observer
            ));
        };
        let found = match &job.action_id {
            Some(id) => o
                .action_ids
                .iter()
                .position(|a| a == id)
                .map(|i| &o.actions[i])
                .filter(|a| a.type_name() == job.action_type),
            None => o
                .actions
                .get(job.action_index)
                .filter(|a| a.type_name() == job.action_type),
        };
        match (found, &job.action_id) {
            (Some(a), _) => Ok((o, a)),
            (None, Some(id)) => Err(format!(
                "observer \"{}\" has no {} action \"{id}\" in this process's configuration",
                job.observer, job.action_type
            )),
            (None, None) => Err(format!(
                "observer \"{}\" has no {} action at position {} in this process's configuration",
                job.observer, job.action_type, job.action_index
            )),
        }
    }

    /// One job per action of every matching observer.
    pub fn jobs_for(&self, ev: &ChangeEvent) -> Vec<Job> {
        let Some(candidates) = self.by_entity.get(&ev.entity) else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        let mut doc: Option<Value> = None;
        for &i in candidates {
            let o = &self.observers[i];
            if !o.matches(ev) {
                continue;
            }
            let doc = doc.get_or_insert_with(|| ev.document());
            for (ai, (a, id)) in o.actions.iter().zip(&o.action_ids).enumerate() {
                jobs.push(Job::new(ev.pk, &o.name, ai, a.type_name(), doc.clone()).for_action(id));
            }
        }
        jobs
    }
}
