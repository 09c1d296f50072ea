//! The HTTP API (axum, JSON).

mod json;
mod routes;

pub use routes::{Operations, operations_router, router, router_with};
