//! Tsunagu's integration tests, one binary (so matrix-sdk is linked once, not once per file):
//! each module drives an in-process server with real clients (matrix-sdk, matrix-js-sdk under
//! Node, raw HTTP) or the `tsunagu` binary itself. Run one area with a filter, e.g.
//! `cargo test --test it threads::`. See tests/README.md.

#![recursion_limit = "256"]

mod common;

mod abuse;
mod account_data;
mod accounts;
mod appservice;
mod binary;
#[cfg(feature = "bots")]
mod bots;
mod chat;
mod conformance;
mod e2ee;
mod element_x;
mod federation;
mod js_client;
mod media;
mod people;
mod push;
mod refusals;
mod rooms;
mod search;
mod sliding_sync;
mod synapse;
mod sync;
mod threads;
