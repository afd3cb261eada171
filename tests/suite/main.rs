//! The integration suite as one test binary: one link instead of one per file, which keeps a
//! cold build's disk and link time down. Each module is one area, run against real servers.

mod access;
mod api_contract;
mod audit;
mod bad_input;
mod common;
mod compose;
mod connect;
mod dashboard;
mod durability;
mod embedded;
mod history;
mod kubernetes;
mod live;
mod liveness;
mod mcp;
mod migrations;
mod nats_auth;
mod openapi;
mod python_client;
mod readme;
mod remote_mechanisms;
mod replicas;
mod schemathesis;
mod shuttle;
mod spin_up;
mod ssh;
mod targets_api;
mod time_travel;
mod usage_limits;
mod warp_bridge;
mod warp_registry;
mod work_flow;
mod workspaces;
mod wrappers;
mod writer;
