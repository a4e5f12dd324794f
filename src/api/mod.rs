//! What Waypoint serves over HTTP: health, readiness, metrics and admin on the health port.

pub mod health;
