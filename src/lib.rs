//! Weft: a coordinator for fleets of AI coding agents, event-sourced on NATS JetStream.
//!
//! The edges (NATS, HTTP, processes) live here; deciding and folding are pure and live in
//! the `decide` and `projections` crates.

pub mod access;
pub mod agent;
pub mod api;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod embedded;
pub mod leases;
pub mod live;
pub mod mcp;
pub mod mechanism;
pub mod metrics;
pub mod nats;
pub mod output;
pub mod past;
pub mod projector;
pub mod protocol;
pub mod registry;
pub mod serve;
pub mod store;
pub mod time;
pub mod tls;
pub mod warp;
pub mod writer;
