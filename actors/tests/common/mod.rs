//! A test actor that records its life in a shared log and misbehaves on request.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use waypoint_actors::{Actor, ActorError, Context, RpcReplyPort};

/// Shared, ordered record of what the test actors did.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    /// Entries that start with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|entry| entry.starts_with(prefix))
            .collect()
    }
    /// Waits (up to 10 s) until `done` holds for the log.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if done(&self.entries()) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; log: {:?}", self.entries());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub enum Cmd {
    Panic,
    /// Works for a while, then panics.
    CrashAfter(Duration),
    Fail,
    Exit,
    Work(Duration),
    Record(String),
    Ping(RpcReplyPort<String>),
}

/// Logs `start:<name>` in init, `msg:<name>:<x>` per Record, `stop:<name>` on graceful stop.
pub struct Probe {
    pub name: String,
    pub log: Log,
}

impl Actor for Probe {
    type Msg = Cmd;
    type State = ();
    type Args = ();

    async fn init(&self, _ctx: &Context<Cmd>, _args: ()) -> Result<(), ActorError> {
        self.log.push(format!("start:{}", self.name));
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context<Cmd>,
        msg: Cmd,
        _state: &mut (),
    ) -> Result<(), ActorError> {
        match msg {
            Cmd::Panic => panic!("probe {} told to panic", self.name),
            Cmd::CrashAfter(duration) => {
                tokio::time::sleep(duration).await;
                panic!("probe {} crashed after {duration:?}", self.name)
            }
            Cmd::Fail => Err(format!("probe {} told to fail", self.name).into()),
            Cmd::Exit => {
                ctx.stop(Some("done".into()));
                Ok(())
            }
            Cmd::Work(duration) => {
                tokio::time::sleep(duration).await;
                Ok(())
            }
            Cmd::Record(what) => {
                self.log.push(format!("msg:{}:{what}", self.name));
                Ok(())
            }
            Cmd::Ping(reply) => {
                let _ = reply.send(format!("pong:{}", self.name));
                Ok(())
            }
        }
    }

    async fn stopping(&self, _ctx: &Context<Cmd>, _state: &mut ()) -> Result<(), ActorError> {
        self.log.push(format!("stop:{}", self.name));
        Ok(())
    }
}

/// A probe child spec and its mailbox.
pub fn probe(
    name: &str,
    log: &Log,
    capacity: usize,
) -> (waypoint_actors::ChildSpec, waypoint_actors::Mailbox<Cmd>) {
    let mailbox = waypoint_actors::Mailbox::new(capacity);
    let (child_name, log) = (name.to_owned(), log.clone());
    let spec = waypoint_actors::ChildSpec::worker(name, mailbox.clone(), move || {
        (
            Probe {
                name: child_name.clone(),
                log: log.clone(),
            },
            (),
        )
    });
    (spec, mailbox)
}

/// Backoff without delay, for tests that are not about timing.
pub fn instant_backoff() -> waypoint_actors::Backoff {
    waypoint_actors::Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        jitter: 0.0,
    }
}
