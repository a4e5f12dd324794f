//! The actor metrics, declared once. Every series is labelled `actor` = the actor's tree path
//! (e.g. `root/produce/publisher:casts`), a bounded set fixed by the tree's shape.

/// Gauge: messages queued in an actor's mailbox or being handled.
pub const MAILBOX_DEPTH: &str = "waypoint_actor_mailbox_depth";
/// Gauge: the capacity of an actor's mailbox.
pub const MAILBOX_CAPACITY: &str = "waypoint_actor_mailbox_capacity";
/// Counter: messages an actor has handled.
pub const MESSAGES_TOTAL: &str = "waypoint_actor_messages_total";
/// Counter: times an actor crashed (panic or error) or failed to start.
pub const FAILURES_TOTAL: &str = "waypoint_actor_failures_total";
/// Counter: times a supervisor restarted an actor.
pub const RESTARTS_TOTAL: &str = "waypoint_actor_restarts_total";
/// The label every actor metric carries.
pub const LABEL_ACTOR: &str = "actor";

/// Registers the help texts of the actor metrics with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(
        MAILBOX_DEPTH,
        "Messages queued in the actor's mailbox or being handled"
    );
    metrics::describe_gauge!(MAILBOX_CAPACITY, "Capacity of the actor's mailbox");
    metrics::describe_counter!(MESSAGES_TOTAL, "Messages the actor has handled");
    metrics::describe_counter!(FAILURES_TOTAL, "Times the actor crashed or failed to start");
    metrics::describe_counter!(
        RESTARTS_TOTAL,
        "Times the actor was restarted by its supervisor"
    );
}

pub(crate) fn set_mailbox_depth(path: &str, depth: usize) {
    metrics::gauge!(MAILBOX_DEPTH, LABEL_ACTOR => path.to_owned()).set(depth as f64);
}

pub(crate) fn set_mailbox_capacity(path: &str, capacity: usize) {
    metrics::gauge!(MAILBOX_CAPACITY, LABEL_ACTOR => path.to_owned()).set(capacity as f64);
}

pub(crate) fn message_handled(path: &str) {
    metrics::counter!(MESSAGES_TOTAL, LABEL_ACTOR => path.to_owned()).increment(1);
}

pub(crate) fn failed(path: &str) {
    metrics::counter!(FAILURES_TOTAL, LABEL_ACTOR => path.to_owned()).increment(1);
}

pub(crate) fn restarted(path: &str) {
    metrics::counter!(RESTARTS_TOTAL, LABEL_ACTOR => path.to_owned()).increment(1);
}
