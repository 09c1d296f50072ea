//! The HTTP API (axum, JSON).

mod json;
mod routes;

pub use routes::{Operations, router, router_with};
