//! The actor trait of this crate and its adaptor onto ractor.
//!
//! ractor's mailboxes are unbounded, so actors here implement [`Actor`] instead of
//! `ractor::Actor`: their messages arrive through a bounded [`Mailbox`]. A private adaptor
//! (`Bounded`) is the `ractor::Actor` that ractor runs; it unwraps each [`Envelope`], calls
//! [`Actor::handle`], releases the envelope's mailbox slot once the handler is done, and counts
//! the message. Everything else — spawning, linking, panics caught and reported to the
//! supervisor, drain and stop — is ractor's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorProcessingErr, ActorRef};

use crate::mailbox::{Envelope, Mailbox, SendError, send_envelope};
use crate::metrics;

/// What an actor returns to crash: it is logged, counted and reported to its supervisor,
/// which restarts it according to its policy.
pub type ActorError = ActorProcessingErr;

/// A supervised actor with a bounded mailbox.
///
/// Handlers should not block: CPU-heavy work belongs in `spawn_blocking`, and every network
/// await needs a timeout. Return an error only when the actor should die and be restarted.
pub trait Actor: Send + Sync + Sized + 'static {
    /// Messages the actor handles.
    type Msg: Send + 'static;
    /// State built by [`Actor::init`] and owned by the running incarnation.
    type State: Send + 'static;
    /// Arguments for [`Actor::init`], made afresh for every (re)start.
    type Args: Send + 'static;

    /// Builds the state. Runs inside the supervisor's start sequence, so keep it quick: do
    /// slow connection work in a first message the actor sends itself.
    fn init(
        &self,
        ctx: &Context<Self::Msg>,
        args: Self::Args,
    ) -> impl Future<Output = Result<Self::State, ActorError>> + Send;

    /// Handles one message.
    fn handle(
        &self,
        ctx: &Context<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// Runs after a graceful stop or drain (not after a crash or a kill).
    fn stopping(
        &self,
        ctx: &Context<Self::Msg>,
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = (ctx, state);
        async { Ok(()) }
    }
}

/// What a running actor knows about itself.
pub struct Context<M> {
    mailbox: Mailbox<M>,
    myself: ActorRef<Envelope<M>>,
    path: Arc<str>,
}

impl<M: Send + 'static> Context<M> {
    /// The actor's own bounded address (the one others send to).
    pub fn mailbox(&self) -> &Mailbox<M> {
        &self.mailbox
    }

    /// The actor's tree path, e.g. `root/persist/consumer:casts:0`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Queues a message to itself without taking a mailbox slot, so a self-driven loop never
    /// blocks on its own full mailbox. Fails once the actor is draining or stopping, which ends
    /// such loops.
    pub fn send_self(&self, msg: M) -> Result<(), SendError<M>> {
        send_envelope(&self.myself, msg, None).map_err(SendError::Closed)
    }

    /// Sends itself `msg` after `delay` (dropped if the actor has stopped by then).
    pub fn send_self_after(&self, delay: Duration, msg: M) -> tokio::task::JoinHandle<()> {
        let myself = self.myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = send_envelope(&myself, msg, None);
        })
    }

    /// Stops this actor after the current message (a normal exit: transient children are not
    /// restarted).
    pub fn stop(&self, reason: Option<String>) {
        self.myself.stop(reason);
    }

    /// Whether this incarnation is draining or stopping: long waits (backoff, backpressure)
    /// should end early so the drain finishes within its timeout.
    pub fn is_stopping(&self) -> bool {
        self.myself.get_status() >= ractor::ActorStatus::Draining
    }

    /// Resolves when the supervisor begins stopping this actor (before it drains the
    /// mailbox). A handler blocked on a long wait (a blocking read, a backoff) can select on it
    /// to return early, so the drain finishes quickly.
    pub async fn stop_requested(&self) {
        self.mailbox.stop_requested().await;
    }

    /// The ractor cell of this incarnation.
    pub fn cell(&self) -> ActorCell {
        self.myself.get_cell()
    }
}

/// The `ractor::Actor` that runs an [`Actor`] behind a bounded mailbox.
pub(crate) struct Bounded<A: Actor> {
    pub(crate) actor: A,
    pub(crate) mailbox: Mailbox<A::Msg>,
    pub(crate) path: Arc<str>,
}

pub(crate) struct BoundedState<A: Actor> {
    ctx: Context<A::Msg>,
    state: A::State,
}

impl<A: Actor> ractor::Actor for Bounded<A> {
    type Msg = Envelope<A::Msg>;
    type State = BoundedState<A>;
    type Arguments = A::Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Bound before init so messages sent meanwhile wait in this incarnation's queue.
        self.mailbox.bind(myself.clone(), Arc::clone(&self.path));
        let ctx = Context {
            mailbox: self.mailbox.clone(),
            myself,
            path: Arc::clone(&self.path),
        };
        let state = self.actor.init(&ctx, args).await?;
        self.mailbox.report_depth();
        Ok(BoundedState { ctx, state })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        envelope: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Envelope { msg, permit } = envelope;
        let result = self.actor.handle(&state.ctx, msg, &mut state.state).await;
        drop(permit);
        metrics::message_handled(&self.path);
        self.mailbox.report_depth();
        result
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let result = self.actor.stopping(&state.ctx, &mut state.state).await;
        self.mailbox.report_depth();
        result
    }
}
