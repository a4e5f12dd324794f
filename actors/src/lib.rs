//! The supervision runtime of Waypoint, on top of ractor: OTP-style supervisors (strategies,
//! restart types, intensity, backoff, ordered start and reverse-order stop), bounded mailboxes
//! that give backpressure, per-actor metrics and a live snapshot of the tree.
//!
//! This crate knows nothing about Farcaster.
//!
//! ```no_run
//! use waypoint_actors::{Actor, ActorError, ChildSpec, Context, Mailbox, Strategy, SupervisorSpec};
//!
//! struct Counter;
//! impl Actor for Counter {
//!     type Msg = u64;
//!     type State = u64;
//!     type Args = ();
//!     async fn init(&self, _: &Context<u64>, _: ()) -> Result<u64, ActorError> { Ok(0) }
//!     async fn handle(&self, _: &Context<u64>, n: u64, total: &mut u64) -> Result<(), ActorError> {
//!         *total += n;
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let counter = Mailbox::new(16);
//! let spec = SupervisorSpec::new(
//!     Strategy::OneForOne,
//!     vec![ChildSpec::worker("counter", counter.clone(), || (Counter, ()))],
//! );
//! let tree = waypoint_actors::start_tree("root", spec).await?;
//! counter.send(2).await?;
//! tree.shutdown(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

mod actor;
mod mailbox;
pub mod metrics;
mod supervisor;
mod tree;

pub use actor::{Actor, ActorError, Context};
pub use mailbox::{CallError, Mailbox, SendError, TrySendError};
pub use ractor::RpcReplyPort;
pub use supervisor::{
    Backoff, ChildSpec, DEFAULT_WORKER_SHUTDOWN, Intensity, Restart, Strategy, SupervisorMsg,
    SupervisorSpec,
};
pub use tree::{NodeKind, NodeSnapshot, NodeStatus, Tree, TreeError, TreeExit, start_tree};
