//! End-to-end tests of the `bank` binary over HTTP, on the embedded store and on PostgreSQL.

mod cli;
mod cluster;
mod contract;
mod crash;
mod edges;
mod load;
mod replay;
mod support;
