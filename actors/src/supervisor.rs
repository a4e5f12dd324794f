//! Supervisors with Erlang/OTP semantics on top of ractor, which only *notifies* a parent of
//! a child's exit; the restart logic is here.
//!
//! Invariants:
//! - children start in spec order and stop in reverse order; a worker is drained (its queued
//!   messages are handled) within its shutdown timeout, then killed; a child supervisor stops
//!   its own children the same way before it exits;
//! - a child's exit is handled by its restart type (permanent: always restarted, transient:
//!   only after a failure, temporary: never) and the strategy (one_for_one: that child,
//!   one_for_all: every child, rest_for_one: that child and the ones started after it);
//! - restarts wait an exponential, jittered backoff, scheduled as a timer message so the
//!   supervisor keeps handling events meanwhile; a start failure during a restart counts as
//!   another failure;
//! - more than `max_restarts` restarts within `period` make the supervisor stop its children
//!   (reverse order) and fail, so its parent handles the failure: escalation climbs the tree;
//! - supervision events from an incarnation that was already replaced or stopped on purpose
//!   are ignored (they are matched by actor id).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use rand::Rng;
use tokio::time::Instant;

use crate::actor::{Actor, Bounded};
use crate::mailbox::{Mailbox, MailboxProbe};
use crate::metrics;
use crate::tree::{NodeKind, NodeStatus, Registry, TreeError};

/// Which siblings restart with a child that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child: the others are stopped (reverse order) and all restart in order.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after a failure (a panic, an error, or being killed), not after a normal exit.
    Transient,
    /// Never.
    Temporary,
}

/// Restart intensity: more than `max_restarts` within `period` and the supervisor gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period: Duration,
}

impl Default for Intensity {
    /// 10 restarts a minute: a flapping dependency (with the backoff below) exhausts this in
    /// about half a minute, long enough to ride out a blip and short enough that a broken
    /// subtree escalates instead of spinning forever.
    fn default() -> Self {
        Self {
            max_restarts: 10,
            period: Duration::from_secs(60),
        }
    }
}

/// Delay before a restart: `initial * 2^(n-1)` for the n-th restart of that child within the
/// intensity period, capped at `max`, then spread by ±`jitter` (a fraction, 0.0..=1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms first, doubling to at most 10 s, ±20 %: quick for a one-off crash, gentle on
    /// a dependency that is down, and decorrelated across actors that failed together.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before the `nth` (1-based) recent restart of a child.
    pub fn delay(&self, nth: usize) -> Duration {
        let exponent = nth.saturating_sub(1).min(32) as i32;
        let base = self.initial.as_secs_f64() * 2f64.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            1.0 + rand::rng().random_range(-jitter..=jitter)
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

/// How a supervisor runs its children.
#[derive(Clone)]
pub struct SupervisorSpec {
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Backoff,
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A spec with the default intensity and backoff.
    pub fn new(strategy: Strategy, children: Vec<ChildSpec>) -> Self {
        Self {
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children,
        }
    }
}

type StartFn =
    Arc<dyn Fn(ChildContext) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// Where a child is being started.
pub(crate) struct ChildContext {
    supervisor: ActorCell,
    path: Arc<str>,
    registry: Registry,
}

/// One child of a supervisor: its name, how to start it, and its restart and shutdown policy.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    restart: Restart,
    shutdown: Option<Duration>,
    kind: NodeKind,
    probe: Option<Arc<dyn MailboxProbe>>,
    start: StartFn,
}

/// How long a worker gets to drain its mailbox when stopped before it is killed.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

/// How long a killed actor gets to go away before the supervisor moves on.
const KILL_WAIT: Duration = Duration::from_secs(2);

impl ChildSpec {
    /// A worker running `A` behind `mailbox`. `make` builds the actor and its arguments for
    /// every (re)start, so each incarnation starts fresh.
    pub fn worker<A: Actor>(
        name: impl Into<String>,
        mailbox: Mailbox<A::Msg>,
        make: impl Fn() -> (A, A::Args) + Send + Sync + 'static,
    ) -> Self {
        let probe: Arc<dyn MailboxProbe> = Arc::new(mailbox.clone());
        let start: StartFn = Arc::new(move |ctx: ChildContext| {
            let (actor, args) = make();
            let mailbox = mailbox.clone();
            Box::pin(async move {
                let bounded = Bounded {
                    actor,
                    mailbox,
                    path: Arc::clone(&ctx.path),
                };
                let (actor_ref, _) =
                    ractor::Actor::spawn_linked(None, bounded, args, ctx.supervisor).await?;
                Ok(actor_ref.get_cell())
            })
        });
        Self {
            name: name.into(),
            restart: Restart::Permanent,
            shutdown: Some(DEFAULT_WORKER_SHUTDOWN),
            kind: NodeKind::Worker,
            probe: Some(probe),
            start,
        }
    }

    /// A nested supervisor running `spec`. By default it waits for its children to stop
    /// (each within its own timeout) rather than being killed.
    pub fn supervisor(name: impl Into<String>, spec: SupervisorSpec) -> Self {
        let start: StartFn = Arc::new(move |ctx: ChildContext| {
            let args = SupervisorArgs {
                spec: spec.clone(),
                path: Arc::clone(&ctx.path),
                registry: ctx.registry.clone(),
            };
            Box::pin(async move {
                let (actor_ref, _) =
                    ractor::Actor::spawn_linked(None, Supervisor, args, ctx.supervisor).await?;
                Ok(actor_ref.get_cell())
            })
        });
        Self {
            name: name.into(),
            restart: Restart::Permanent,
            shutdown: None,
            kind: NodeKind::Supervisor,
            probe: None,
            start,
        }
    }

    /// Sets the restart type (default: permanent).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how long the child gets to stop before it is killed.
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = Some(timeout);
        self
    }

    /// The child's name (unique among its siblings, no `/`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Messages a supervisor handles besides supervision events.
pub enum SupervisorMsg {
    /// A scheduled restart is due (stale generations are ignored).
    RestartDue { generation: u64 },
    /// Restart one child (and the siblings its strategy ties to it) now, without counting
    /// toward the restart intensity.
    RestartChild {
        name: String,
        reply: RpcReplyPort<Result<(), TreeError>>,
    },
    /// Add a child after the existing ones and start it (OTP's `start_child`). It stops
    /// first when the supervisor stops, as the last-started child.
    StartChild {
        spec: ChildSpec,
        reply: RpcReplyPort<Result<(), TreeError>>,
    },
}

pub(crate) struct SupervisorArgs {
    pub(crate) spec: SupervisorSpec,
    pub(crate) path: Arc<str>,
    pub(crate) registry: Registry,
}

pub(crate) struct Supervisor;

pub(crate) struct SupervisorState {
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    path: Arc<str>,
    registry: Registry,
    slots: Vec<Slot>,
    /// Restarts of any child within the intensity period.
    restarts: VecDeque<Instant>,
    next_generation: u64,
}

struct Slot {
    spec: ChildSpec,
    path: Arc<str>,
    cell: Option<ActorCell>,
    /// Generation of the restart this child waits for, if any.
    pending: Option<u64>,
    /// This child's restarts within the intensity period (the backoff exponent).
    recent: VecDeque<Instant>,
}

/// How a child went away.
enum Exit {
    Normal(Option<String>),
    Failed(String),
}

impl Exit {
    fn is_failure(&self) -> bool {
        matches!(self, Exit::Failed(_))
    }
}

impl ractor::Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let SupervisorArgs {
            spec,
            path,
            registry,
        } = args;
        registry.register_supervisor(&path, myself.clone());
        let mut slots = Vec::with_capacity(spec.children.len());
        for (order, child) in spec.children.into_iter().enumerate() {
            let valid = !child.name.is_empty()
                && !child.name.contains('/')
                && !slots.iter().any(|slot: &Slot| slot.spec.name == child.name);
            if !valid {
                let reason = format!(
                    "invalid or duplicate child name {:?} under {path}",
                    child.name
                );
                registry.set_status(&path, NodeStatus::Failed, Some(reason.clone()));
                return Err(reason.into());
            }
            let child_path: Arc<str> = format!("{path}/{}", child.name).into();
            registry.register_child(
                &child_path,
                &child.name,
                order,
                child.kind,
                child.probe.clone(),
            );
            slots.push(Slot {
                spec: child,
                path: child_path,
                cell: None,
                pending: None,
                recent: VecDeque::new(),
            });
        }
        let mut state = SupervisorState {
            strategy: spec.strategy,
            intensity: spec.intensity,
            backoff: spec.backoff,
            path,
            registry,
            slots,
            restarts: VecDeque::new(),
            next_generation: 0,
        };
        for index in 0..state.slots.len() {
            if let Err(error) = state.start_slot(&myself, index).await {
                let reason = format!("child {} failed to start: {error}", state.slots[index].path);
                state.stop_all().await;
                state
                    .registry
                    .set_status(&state.path, NodeStatus::Failed, Some(reason.clone()));
                return Err(reason.into());
            }
        }
        state
            .registry
            .set_status(&state.path, NodeStatus::Running, None);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::RestartDue { generation } => {
                state.on_restart_due(&myself, generation).await
            }
            SupervisorMsg::RestartChild { name, reply } => {
                state.on_restart_child(&myself, &name, reply).await
            }
            SupervisorMsg::StartChild { spec, reply } => {
                state.on_start_child(&myself, spec, reply).await;
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // ractor reports a kill as a termination with reason "killed"; OTP counts it
                // as abnormal, and so do we.
                let exit = match reason {
                    Some(reason) if reason == "killed" => Exit::Failed(reason),
                    reason => Exit::Normal(reason),
                };
                state.on_child_exit(&myself, &cell, exit).await
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                state
                    .on_child_exit(&myself, &cell, Exit::Failed(error.to_string()))
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state
            .registry
            .set_status(&state.path, NodeStatus::Stopping, None);
        state.stop_all().await;
        state
            .registry
            .set_status(&state.path, NodeStatus::Stopped, None);
        Ok(())
    }
}

impl SupervisorState {
    /// Appends a child slot (not started), checking its name.
    fn add_slot(&mut self, child: ChildSpec) -> Result<usize, TreeError> {
        let valid = !child.name.is_empty()
            && !child.name.contains('/')
            && !self.slots.iter().any(|slot| slot.spec.name == child.name);
        if !valid {
            return Err(TreeError::InvalidChild(format!(
                "invalid or duplicate child name {:?} under {}",
                child.name, self.path
            )));
        }
        let order = self.slots.len();
        let path: Arc<str> = format!("{}/{}", self.path, child.name).into();
        self.registry
            .register_child(&path, &child.name, order, child.kind, child.probe.clone());
        self.slots.push(Slot {
            spec: child,
            path,
            cell: None,
            pending: None,
            recent: VecDeque::new(),
        });
        Ok(order)
    }

    async fn on_start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
        reply: RpcReplyPort<Result<(), TreeError>>,
    ) {
        let result = match self.add_slot(spec) {
            Ok(index) => match self.start_slot(myself, index).await {
                Ok(()) => Ok(()),
                Err(error) => {
                    let error = spawn_failure(&error);
                    // Like a failed start_child in OTP: the child is not kept.
                    let slot = self.slots.remove(index);
                    self.registry.set_status(
                        &slot.path,
                        NodeStatus::Failed,
                        Some(format!("start failed: {error}")),
                    );
                    Err(TreeError::StartFailed {
                        path: slot.path.to_string(),
                        reason: error.to_string(),
                    })
                }
            },
            Err(error) => Err(error),
        };
        let _ = reply.send(result);
    }

    async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        cell: &ActorCell,
        exit: Exit,
    ) -> Result<(), ActorProcessingErr> {
        let id = cell.get_id();
        let Some(index) = self
            .slots
            .iter()
            .position(|slot| slot.cell.as_ref().map(ActorCell::get_id) == Some(id))
        else {
            // An incarnation already replaced or stopped on purpose.
            return Ok(());
        };
        let slot = &mut self.slots[index];
        slot.cell = None;
        match &exit {
            Exit::Failed(reason) => {
                tracing::warn!(actor = %slot.path, %reason, "actor failed");
                metrics::failed(&slot.path);
                self.registry
                    .set_status(&slot.path, NodeStatus::Failed, Some(reason.clone()));
            }
            Exit::Normal(reason) => {
                tracing::info!(actor = %slot.path, reason = reason.as_deref().unwrap_or(""), "actor stopped");
                self.registry
                    .set_status(&slot.path, NodeStatus::Stopped, None);
            }
        }
        let restart = match slot.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => exit.is_failure(),
            Restart::Temporary => false,
        };
        if restart {
            self.schedule_restart(myself, index).await
        } else {
            Ok(())
        }
    }

    /// Counts a restart of `index` against the intensity, stops the siblings its strategy ties
    /// to it, and schedules their start after the backoff.
    async fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let period = self.intensity.period;
        self.restarts.push_back(now);
        prune(&mut self.restarts, now, period);
        if self.restarts.len() > self.intensity.max_restarts as usize {
            return Err(self.escalate().await);
        }

        let group = self.group(index);
        for &member in group.iter().rev() {
            self.stop_slot(member).await;
        }

        let slot = &mut self.slots[index];
        slot.recent.push_back(now);
        prune(&mut slot.recent, now, period);
        let delay = self.backoff.delay(slot.recent.len());

        let generation = self.next_generation;
        self.next_generation += 1;
        for &member in &group {
            self.slots[member].pending = Some(generation);
            self.registry
                .set_status(&self.slots[member].path, NodeStatus::Restarting, None);
        }
        tracing::info!(
            actor = %self.slots[index].path,
            delay_ms = delay.as_millis() as u64,
            siblings = group.len() - 1,
            "restart scheduled"
        );
        let myself = myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = myself.cast(SupervisorMsg::RestartDue { generation });
        });
        Ok(())
    }

    /// The children that restart with `index`. Temporary siblings are stopped but never
    /// restarted, so they are left out.
    fn group(&self, index: usize) -> Vec<usize> {
        let members: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..self.slots.len()).collect(),
            Strategy::RestForOne => (index..self.slots.len()).collect(),
        };
        let (keep, temporary): (Vec<usize>, Vec<usize>) = members
            .into_iter()
            .partition(|&m| m == index || self.slots[m].spec.restart != Restart::Temporary);
        // Temporary siblings still go down with the group; they just do not come back.
        for member in temporary {
            if let Some(cell) = self.slots[member].cell.as_ref() {
                cell.stop(Some("sibling restart".into()));
            }
        }
        keep
    }

    async fn on_restart_due(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        generation: u64,
    ) -> Result<(), ActorProcessingErr> {
        let group: Vec<usize> = (0..self.slots.len())
            .filter(|&index| self.slots[index].pending == Some(generation))
            .collect();
        for &index in &group {
            self.slots[index].pending = None;
        }
        for index in group {
            if let Err(error) = self.restart_slot(myself, index).await {
                let error = spawn_failure(&error);
                tracing::warn!(actor = %self.slots[index].path, %error, "restart failed");
                metrics::failed(&self.slots[index].path);
                self.registry.set_status(
                    &self.slots[index].path,
                    NodeStatus::Failed,
                    Some(format!("start failed: {error}")),
                );
                return self.schedule_restart(myself, index).await;
            }
        }
        Ok(())
    }

    async fn on_restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: &str,
        reply: RpcReplyPort<Result<(), TreeError>>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(index) = self.slots.iter().position(|slot| slot.spec.name == name) else {
            let _ = reply.send(Err(TreeError::NotFound(format!("{}/{name}", self.path))));
            return Ok(());
        };
        tracing::info!(actor = %self.slots[index].path, "restart requested");
        let group = self.group(index);
        for &member in group.iter().rev() {
            self.stop_slot(member).await;
        }
        for member in group {
            self.slots[member].pending = None;
            if let Err(error) = self.restart_slot(myself, member).await {
                let error = spawn_failure(&error);
                let path = self.slots[member].path.to_string();
                metrics::failed(&path);
                self.registry.set_status(
                    &path,
                    NodeStatus::Failed,
                    Some(format!("start failed: {error}")),
                );
                let _ = reply.send(Err(TreeError::StartFailed {
                    path,
                    reason: error.to_string(),
                }));
                return self.schedule_restart(myself, member).await;
            }
        }
        let _ = reply.send(Ok(()));
        Ok(())
    }

    async fn restart_slot(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
    ) -> Result<(), SpawnErr> {
        self.start_slot(myself, index).await?;
        let path = &self.slots[index].path;
        metrics::restarted(path);
        self.registry.record_restart(path);
        tracing::info!(actor = %path, "actor restarted");
        Ok(())
    }

    async fn start_slot(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
    ) -> Result<(), SpawnErr> {
        let slot = &mut self.slots[index];
        self.registry
            .set_status(&slot.path, NodeStatus::Starting, None);
        let ctx = ChildContext {
            supervisor: myself.get_cell(),
            path: Arc::clone(&slot.path),
            registry: self.registry.clone(),
        };
        let cell = (slot.spec.start)(ctx).await?;
        slot.cell = Some(cell);
        self.registry
            .set_status(&slot.path, NodeStatus::Running, None);
        Ok(())
    }

    /// Stops one child gracefully (drain for workers), killing it after its timeout.
    async fn stop_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(cell) = slot.cell.take() else {
            return;
        };
        self.registry
            .set_status(&slot.path, NodeStatus::Stopping, None);
        if let Some(probe) = &slot.spec.probe {
            probe.request_stop();
        }
        let stopped = match slot.spec.kind {
            NodeKind::Worker => cell.drain_and_wait(slot.spec.shutdown).await.is_ok(),
            NodeKind::Supervisor => cell.stop_and_wait(None, slot.spec.shutdown).await.is_ok(),
        };
        if !stopped && cell.get_status() != ractor::ActorStatus::Stopped {
            tracing::warn!(actor = %slot.path, "actor did not stop in time, killing it");
            let _ = cell.kill_and_wait(Some(KILL_WAIT)).await;
        }
        self.registry
            .set_status(&slot.path, NodeStatus::Stopped, None);
    }

    /// Stops every child in reverse start order and cancels pending restarts.
    async fn stop_all(&mut self) {
        for index in (0..self.slots.len()).rev() {
            self.slots[index].pending = None;
            self.stop_slot(index).await;
        }
    }

    /// Restart intensity exceeded: stop the children and fail, handing the problem upward.
    async fn escalate(&mut self) -> ActorProcessingErr {
        let reason = format!(
            "restart intensity exceeded: more than {} restarts in {:?}",
            self.intensity.max_restarts, self.intensity.period
        );
        tracing::error!(supervisor = %self.path, %reason, "stopping children and escalating");
        self.stop_all().await;
        self.registry
            .set_status(&self.path, NodeStatus::Failed, Some(reason.clone()));
        reason.into()
    }
}

/// Why a child did not start, without ractor's "Actor panicked during startup" wording for
/// what is usually an `init` that returned an error.
pub(crate) fn spawn_failure(error: &SpawnErr) -> String {
    match error {
        SpawnErr::StartupFailed(reason) => reason.to_string(),
        other => other.to_string(),
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, period: Duration) {
    while times
        .front()
        .is_some_and(|&time| now.duration_since(time) > period)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(4), Duration::from_millis(800));
        assert_eq!(backoff.delay(5), Duration::from_secs(1));
        assert_eq!(backoff.delay(500), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let backoff = Backoff {
            initial: Duration::from_millis(1000),
            max: Duration::from_secs(10),
            jitter: 0.2,
        };
        for _ in 0..1000 {
            let delay = backoff.delay(1);
            assert!(delay >= Duration::from_millis(800) && delay <= Duration::from_millis(1200));
        }
    }

    #[test]
    fn prune_drops_times_older_than_the_period() {
        let now = Instant::now();
        let mut times: VecDeque<Instant> = [
            now - Duration::from_secs(10),
            now - Duration::from_secs(5),
            now,
        ]
        .into_iter()
        .collect();
        prune(&mut times, now, Duration::from_secs(6));
        assert_eq!(times.len(), 2);
    }
}
