//! A running supervision tree: its handle ([`Tree`]) and the registry behind introspection.
//!
//! Supervisors record every child's status, restarts and last failure in a shared registry as
//! they go, so [`Tree::snapshot`] is a cheap read that never waits on a busy supervisor (one
//! may be draining a child for seconds). Restart requests go to the parent supervisor of the
//! path as a message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use serde::Serialize;
use tokio::sync::watch;

use crate::mailbox::MailboxProbe;
use crate::supervisor::{ChildSpec, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorSpec};

/// Whether a node supervises others or does work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Supervisor,
    Worker,
}

/// Lifecycle of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Starting,
    Running,
    /// Exited; a restart is scheduled.
    Restarting,
    Stopping,
    Stopped,
    Failed,
}

/// One node of [`Tree::snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeSnapshot {
    pub name: String,
    pub path: String,
    pub kind: NodeKind,
    pub status: NodeStatus,
    pub restarts: u64,
    pub mailbox_depth: Option<usize>,
    pub mailbox_capacity: Option<usize>,
    pub last_failure: Option<String>,
    pub children: Vec<NodeSnapshot>,
}

impl NodeSnapshot {
    /// The node at `path` in this subtree.
    pub fn find(&self, path: &str) -> Option<&NodeSnapshot> {
        if self.path == path {
            return Some(self);
        }
        self.children.iter().find_map(|child| child.find(path))
    }

    /// Every node of the subtree, depth first in start order.
    pub fn nodes(&self) -> Vec<&NodeSnapshot> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.nodes());
        }
        out
    }
}

/// Errors of tree operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("no actor at {0}")]
    NotFound(String),
    #[error("{path} failed to start: {reason}")]
    StartFailed { path: String, reason: String },
    #[error("the supervisor of {0} is not running")]
    SupervisorGone(String),
    #[error("{0}")]
    InvalidChild(String),
    #[error("the tree did not stop within {0:?}; remaining actors were killed")]
    ShutdownTimedOut(Duration),
}

/// How a tree ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeExit {
    /// Stopped on request.
    Stopped,
    /// The root failed: escalation reached it (or it crashed).
    Failed(String),
}

struct NodeEntry {
    name: String,
    order: usize,
    kind: NodeKind,
    status: NodeStatus,
    restarts: u64,
    last_failure: Option<String>,
    mailbox: Option<Arc<dyn MailboxProbe>>,
    supervisor: Option<ActorRef<SupervisorMsg>>,
}

/// Shared record of every node, keyed by path.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    nodes: Arc<Mutex<BTreeMap<String, NodeEntry>>>,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, NodeEntry>) -> T) -> T {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut nodes)
    }

    fn entry<'a>(nodes: &'a mut BTreeMap<String, NodeEntry>, path: &str) -> &'a mut NodeEntry {
        nodes.entry(path.to_owned()).or_insert_with(|| NodeEntry {
            name: path.rsplit('/').next().unwrap_or(path).to_owned(),
            order: 0,
            kind: NodeKind::Supervisor,
            status: NodeStatus::Starting,
            restarts: 0,
            last_failure: None,
            mailbox: None,
            supervisor: None,
        })
    }

    pub(crate) fn register_supervisor(&self, path: &str, supervisor: ActorRef<SupervisorMsg>) {
        self.with(|nodes| {
            let entry = Self::entry(nodes, path);
            entry.kind = NodeKind::Supervisor;
            entry.status = NodeStatus::Starting;
            entry.supervisor = Some(supervisor);
        });
    }

    pub(crate) fn register_child(
        &self,
        path: &str,
        name: &str,
        order: usize,
        kind: NodeKind,
        mailbox: Option<Arc<dyn MailboxProbe>>,
    ) {
        self.with(|nodes| {
            let entry = Self::entry(nodes, path);
            entry.name = name.to_owned();
            entry.order = order;
            entry.kind = kind;
            entry.mailbox = mailbox;
        });
    }

    /// Sets a node's status; `failure` (when given) becomes its last failure reason.
    pub(crate) fn set_status(&self, path: &str, status: NodeStatus, failure: Option<String>) {
        self.with(|nodes| {
            let entry = Self::entry(nodes, path);
            entry.status = status;
            if failure.is_some() {
                entry.last_failure = failure;
            }
        });
    }

    pub(crate) fn record_restart(&self, path: &str) {
        self.with(|nodes| Self::entry(nodes, path).restarts += 1);
    }

    fn status(&self, path: &str) -> Option<(NodeStatus, Option<String>)> {
        self.with(|nodes| {
            nodes
                .get(path)
                .map(|entry| (entry.status, entry.last_failure.clone()))
        })
    }

    fn supervisor(&self, path: &str) -> Option<ActorRef<SupervisorMsg>> {
        self.with(|nodes| nodes.get(path).and_then(|entry| entry.supervisor.clone()))
    }

    fn parent_supervisor(
        &self,
        path: &str,
    ) -> Result<(ActorRef<SupervisorMsg>, String), TreeError> {
        let (parent, name) = path
            .rsplit_once('/')
            .ok_or_else(|| TreeError::NotFound(path.to_owned()))?;
        self.with(|nodes| {
            if !nodes.contains_key(path) {
                return Err(TreeError::NotFound(path.to_owned()));
            }
            nodes
                .get(parent)
                .and_then(|entry| entry.supervisor.clone())
                .map(|supervisor| (supervisor, name.to_owned()))
                .ok_or_else(|| TreeError::SupervisorGone(path.to_owned()))
        })
    }

    fn snapshot(&self, root: &str) -> NodeSnapshot {
        self.with(|nodes| build_snapshot(nodes, root))
    }
}

fn build_snapshot(nodes: &BTreeMap<String, NodeEntry>, path: &str) -> NodeSnapshot {
    let prefix = format!("{path}/");
    let mut children: Vec<(&String, &NodeEntry)> = nodes
        .range(prefix.clone()..)
        .take_while(|(child, _)| child.starts_with(&prefix))
        .filter(|(child, _)| !child[prefix.len()..].contains('/'))
        .collect();
    children.sort_by_key(|(_, entry)| entry.order);
    let entry = nodes.get(path);
    NodeSnapshot {
        name: entry
            .map(|entry| entry.name.clone())
            .unwrap_or_else(|| path.to_owned()),
        path: path.to_owned(),
        kind: entry.map_or(NodeKind::Supervisor, |entry| entry.kind),
        status: entry.map_or(NodeStatus::Stopped, |entry| entry.status),
        restarts: entry.map_or(0, |entry| entry.restarts),
        mailbox_depth: entry
            .and_then(|entry| entry.mailbox.as_ref().map(|mailbox| mailbox.depth())),
        mailbox_capacity: entry
            .and_then(|entry| entry.mailbox.as_ref().map(|mailbox| mailbox.capacity())),
        last_failure: entry.and_then(|entry| entry.last_failure.clone()),
        children: children
            .into_iter()
            .map(|(child, _)| build_snapshot(nodes, child))
            .collect(),
    }
}

/// Handle of a running supervision tree; cheap to clone.
#[derive(Clone)]
pub struct Tree {
    inner: Arc<TreeInner>,
}

struct TreeInner {
    root: ActorRef<SupervisorMsg>,
    path: Arc<str>,
    registry: Registry,
    exit: watch::Receiver<Option<TreeExit>>,
}

/// Starts a tree whose root supervisor is named `name` (its path, and the first segment of
/// every path below it). Children start in order before this returns; if one fails to start,
/// the ones already started are stopped and the error is returned.
pub async fn start_tree(name: &str, spec: SupervisorSpec) -> Result<Tree, TreeError> {
    let registry = Registry::default();
    let path: Arc<str> = name.into();
    let args = SupervisorArgs {
        spec,
        path: Arc::clone(&path),
        registry: registry.clone(),
    };
    let (root, handle) = ractor::Actor::spawn(None, Supervisor, args)
        .await
        .map_err(|error| TreeError::StartFailed {
            path: name.to_owned(),
            reason: crate::supervisor::spawn_failure(&error),
        })?;
    let (exit_tx, exit_rx) = watch::channel(None);
    let watcher_registry = registry.clone();
    let watcher_path = Arc::clone(&path);
    tokio::spawn(async move {
        let _ = handle.await;
        let exit = match watcher_registry.status(&watcher_path) {
            Some((NodeStatus::Stopped, _)) => TreeExit::Stopped,
            Some((_, Some(reason))) => TreeExit::Failed(reason),
            _ => TreeExit::Failed("the root supervisor terminated unexpectedly".into()),
        };
        let _ = exit_tx.send(Some(exit));
    });
    Ok(Tree {
        inner: Arc::new(TreeInner {
            root,
            path,
            registry,
            exit: exit_rx,
        }),
    })
}

impl Tree {
    /// The root's path (the name given to [`start_tree`]).
    pub fn root_path(&self) -> &str {
        &self.inner.path
    }

    /// The whole tree as it is now.
    pub fn snapshot(&self) -> NodeSnapshot {
        self.inner.registry.snapshot(&self.inner.path)
    }

    /// Whether the root supervisor is running (not stopping, stopped or failed).
    pub fn is_running(&self) -> bool {
        matches!(
            self.inner.registry.status(&self.inner.path),
            Some((NodeStatus::Running, _))
        ) && self.inner.exit.borrow().is_none()
    }

    /// Restarts the subtree at `path` (and the siblings its parent's strategy ties to it),
    /// stopping it gracefully first. Does not count toward restart intensity.
    pub async fn restart(&self, path: &str) -> Result<(), TreeError> {
        let (supervisor, name) = self.inner.registry.parent_supervisor(path)?;
        let (reply_tx, reply_rx) = ractor::concurrency::oneshot();
        supervisor
            .cast(SupervisorMsg::RestartChild {
                name,
                reply: reply_tx.into(),
            })
            .map_err(|_| TreeError::SupervisorGone(path.to_owned()))?;
        reply_rx
            .await
            .map_err(|_| TreeError::SupervisorGone(path.to_owned()))?
    }

    /// Adds `spec` as the last child of the supervisor at `parent` and starts it.
    pub async fn start_child(&self, parent: &str, spec: ChildSpec) -> Result<(), TreeError> {
        let supervisor = self
            .inner
            .registry
            .supervisor(parent)
            .ok_or_else(|| TreeError::NotFound(parent.to_owned()))?;
        let (reply_tx, reply_rx) = ractor::concurrency::oneshot();
        supervisor
            .cast(SupervisorMsg::StartChild {
                spec,
                reply: reply_tx.into(),
            })
            .map_err(|_| TreeError::SupervisorGone(parent.to_owned()))?;
        reply_rx
            .await
            .map_err(|_| TreeError::SupervisorGone(parent.to_owned()))?
    }

    /// Stops the whole tree: children in reverse start order, workers drained. Whatever is
    /// still running when `grace` ends is killed.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), TreeError> {
        self.inner
            .registry
            .set_status(&self.inner.path, NodeStatus::Stopping, None);
        let stop = self.inner.root.stop_and_wait(None, Some(grace)).await;
        if stop.is_ok() || self.inner.root.get_status() == ractor::ActorStatus::Stopped {
            self.wait().await;
            return Ok(());
        }
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "tree did not stop in time, killing it"
        );
        let _ = self
            .inner
            .root
            .kill_and_wait(Some(Duration::from_secs(5)))
            .await;
        Err(TreeError::ShutdownTimedOut(grace))
    }

    /// Waits until the root terminates.
    pub async fn wait(&self) -> TreeExit {
        let mut exit = self.inner.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone().unwrap_or(TreeExit::Stopped),
            // The watcher task is gone: only possible while the runtime shuts down.
            Err(_) => TreeExit::Failed("tree watcher stopped".into()),
        }
    }
}
