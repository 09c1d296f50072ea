//! The HTTP API (axum, JSON).

mod json;
mod routes;

pub use routes::{router, router_with_admin};
