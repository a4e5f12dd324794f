//! Bounded mailboxes in front of ractor's unbounded ones.
//!
//! A [`Mailbox`] is the address of one actor *slot* in the tree: it is created before the actor
//! starts (so the tree can be wired bottom-up) and re-bound by the supervisor to every new
//! incarnation after a restart, so senders never hold a stale reference.
//!
//! Capacity is a semaphore: every message carries one permit inside its [`Envelope`], taken by
//! the sender and released when the actor has finished handling the message (or when the
//! message is dropped because the actor died). So:
//! - `depth = capacity - free permits` counts messages queued or being handled;
//! - [`Mailbox::send`] waits while the mailbox is full (this is the backpressure path) and
//!   [`Mailbox::try_send`] fails at once with [`TrySendError::Full`];
//! - when an actor dies its queued envelopes are dropped, their permits come back, and a sender
//!   that was waiting either delivers to the restarted incarnation or gets
//!   [`SendError::Closed`] with its message back — it never hangs on a dead actor.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{ActorCell, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

/// A message on its way to an actor, with the mailbox slot it occupies.
pub struct Envelope<M> {
    pub(crate) msg: M,
    /// `None` for messages an actor sends itself, which bypass the capacity.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// Why [`Mailbox::send`] did not deliver. The message is given back.
#[derive(thiserror::Error)]
pub enum SendError<M> {
    /// No live actor behind this mailbox (not started yet, stopped, or restarting).
    #[error("mailbox closed: no live actor")]
    Closed(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Closed(msg) => msg,
        }
    }
}

/// Why [`Mailbox::try_send`] did not deliver. The message is given back.
#[derive(thiserror::Error)]
pub enum TrySendError<M> {
    /// The mailbox holds `capacity` messages already.
    #[error("mailbox full")]
    Full(M),
    /// No live actor behind this mailbox.
    #[error("mailbox closed: no live actor")]
    Closed(M),
}

impl<M> TrySendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full(msg) | TrySendError::Closed(msg) => msg,
        }
    }
}

// Debug without requiring the message to be Debug, so `?` and `unwrap` work for any message.
impl<M> std::fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendError::Closed(..)")
    }
}

impl<M> std::fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("TrySendError::Full(..)"),
            TrySendError::Closed(_) => f.write_str("TrySendError::Closed(..)"),
        }
    }
}

/// Why [`Mailbox::call`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("mailbox closed: no live actor")]
    Closed,
    #[error("the actor dropped the reply port without answering")]
    NoReply,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

struct Target<M> {
    actor: ActorRef<Envelope<M>>,
    path: Arc<str>,
}

struct Inner<M> {
    capacity: usize,
    permits: Arc<Semaphore>,
    target: RwLock<Option<Target<M>>>,
    /// Raised when the supervisor starts stopping the current incarnation; lowered on bind.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// The cloneable, bounded address of an actor slot. See the module docs.
pub struct Mailbox<M> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: Send + 'static> std::fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("path", &self.path())
            .field("capacity", &self.inner.capacity)
            .field("depth", &self.depth())
            .finish()
    }
}

impl<M: Send + 'static> Mailbox<M> {
    /// A mailbox for `capacity` messages (at least 1), not yet bound to an actor: sends fail
    /// with `Closed` until its actor starts.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Inner {
                capacity,
                permits: Arc::new(Semaphore::new(capacity)),
                target: RwLock::new(None),
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// How many messages the mailbox holds at most.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Messages queued or being handled.
    pub fn depth(&self) -> usize {
        self.inner.capacity
            - self
                .inner
                .permits
                .available_permits()
                .min(self.inner.capacity)
    }

    /// The tree path of the actor slot, once bound (e.g. `root/ingest/publisher:casts`).
    pub fn path(&self) -> Option<String> {
        self.read_target(|target| target.path.to_string())
    }

    /// Whether a live actor is behind this mailbox right now.
    pub fn is_alive(&self) -> bool {
        self.read_target(|target| is_accepting(&target.actor.get_cell()))
            .unwrap_or(false)
    }

    /// The current incarnation's cell, if any.
    pub fn actor_cell(&self) -> Option<ActorCell> {
        self.read_target(|target| target.actor.get_cell())
    }

    /// Delivers `msg`, waiting while the mailbox is full. Fails with `Closed` (giving the
    /// message back) when no live actor is behind the mailbox.
    pub async fn send(&self, msg: M) -> Result<(), SendError<M>> {
        if !self.is_alive() {
            return Err(SendError::Closed(msg));
        }
        let Ok(permit) = Arc::clone(&self.inner.permits).acquire_owned().await else {
            return Err(SendError::Closed(msg));
        };
        self.deliver(msg, Some(permit)).map_err(SendError::Closed)
    }

    /// Delivers `msg` only if there is room right now.
    pub fn try_send(&self, msg: M) -> Result<(), TrySendError<M>> {
        if !self.is_alive() {
            return Err(TrySendError::Closed(msg));
        }
        let Ok(permit) = Arc::clone(&self.inner.permits).try_acquire_owned() else {
            return Err(TrySendError::Full(msg));
        };
        self.deliver(msg, Some(permit))
            .map_err(TrySendError::Closed)
    }

    /// Sends a request built around a reply port and waits for the answer (bounded by
    /// `timeout` when given). Waits for room like [`Mailbox::send`].
    pub async fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(RpcReplyPort<R>) -> M,
        timeout: Option<Duration>,
    ) -> Result<R, CallError> {
        let (reply_tx, reply_rx) = ractor::concurrency::oneshot();
        let request = async {
            self.send(make(reply_tx.into()))
                .await
                .map_err(|_| CallError::Closed)?;
            reply_rx.await.map_err(|_| CallError::NoReply)
        };
        match timeout {
            Some(limit) => tokio::time::timeout(limit, request)
                .await
                .map_err(|_| CallError::Timeout(limit))?,
            None => request.await,
        }
    }

    /// Binds the mailbox to a new incarnation of its actor.
    pub(crate) fn bind(&self, actor: ActorRef<Envelope<M>>, path: Arc<str>) {
        metrics::set_mailbox_capacity(&path, self.inner.capacity);
        self.inner.stopping.send_replace(false);
        let mut target = self
            .inner
            .target
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *target = Some(Target { actor, path });
    }

    /// Resolves once the supervisor has begun stopping the current incarnation.
    pub(crate) async fn stop_requested(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// Publishes the current depth under the bound path.
    pub(crate) fn report_depth(&self) {
        if let Some(path) = self.read_target(|target| Arc::clone(&target.path)) {
            metrics::set_mailbox_depth(&path, self.depth());
        }
    }

    fn deliver(&self, msg: M, permit: Option<OwnedSemaphorePermit>) -> Result<(), M> {
        let Some(actor) = self.read_target(|target| target.actor.clone()) else {
            return Err(msg);
        };
        send_envelope(&actor, msg, permit)?;
        self.report_depth();
        Ok(())
    }

    fn read_target<T>(&self, read: impl FnOnce(&Target<M>) -> T) -> Option<T> {
        let target = self
            .inner
            .target
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        target.as_ref().map(read)
    }
}

/// Hands a message to an incarnation, giving it back when the actor no longer accepts
/// messages (draining, stopping or gone).
pub(crate) fn send_envelope<M: Send + 'static>(
    actor: &ActorRef<Envelope<M>>,
    msg: M,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<(), M> {
    match actor.send_message(Envelope { msg, permit }) {
        Ok(()) => Ok(()),
        Err(MessagingErr::SendErr(envelope)) => Err(envelope.msg),
        // ractor reports these (without the message) only for remote or mistyped actors, which
        // this crate never creates: the mailbox's type fixes the actor's. Were it ever to
        // happen the message would be gone, so it is logged loudly rather than hidden.
        Err(MessagingErr::ChannelClosed | MessagingErr::InvalidActorType) => {
            tracing::error!("actor message lost: unexpected messaging error");
            Ok(())
        }
    }
}

fn is_accepting(cell: &ActorCell) -> bool {
    matches!(
        cell.get_status(),
        ractor::ActorStatus::Unstarted
            | ractor::ActorStatus::Starting
            | ractor::ActorStatus::Running
            | ractor::ActorStatus::Upgrading
    )
}

/// Read-only view of a mailbox for introspection, independent of its message type.
pub(crate) trait MailboxProbe: Send + Sync {
    fn depth(&self) -> usize;
    fn capacity(&self) -> usize;
    /// Tells the running incarnation that it is being stopped (see `Context::stop_requested`).
    fn request_stop(&self);
}

impl<M: Send + 'static> MailboxProbe for Mailbox<M> {
    fn depth(&self) -> usize {
        Mailbox::depth(self)
    }
    fn capacity(&self) -> usize {
        Mailbox::capacity(self)
    }
    fn request_stop(&self) {
        self.inner.stopping.send_replace(true);
    }
}
