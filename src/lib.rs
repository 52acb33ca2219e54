//! rtmanager keeps game-engine containers in the state their operators
//! declared.
//!
//! How a document becomes a running container:
//!
//! ```text
//!  rtctl apply ──► etcd  /rtmanager/gameruntimes/<name>      (model, store)
//!                   │
//!                   ▼  list at R, watch from R+1
//!               controller: queue ─► plan(desired, observed) ─► lifecycle
//!                                                               │ under a per-game lease
//!                                                               ▼
//!                                          Docker (runtime)  +  status / history in etcd
//! ```
//!
//! Module map:
//!
//! - [`model`]: the `GameRuntime` document — types, parsing, validation,
//!   defaults, the CRD schema.
//! - [`store`]: the `Store` trait over etcd (the only user of `etcd_client`),
//!   its in-memory twin, the key layout and typed access to documents.
//! - [`runtime`]: the `ContainerRuntime` trait over Docker (the only user of
//!   `bollard`) and its fake.
//! - [`lease`]: per-game leases on one etcd session per controller, and
//!   the fence every guarded write compares.
//! - [`history`]: the per-game operation log.
//! - [`status`]: the per-game status record, written only when it changes.
//! - [`lifecycle`]: start, stop, restart (a recreate), remove, unpause and
//!   the reclaiming of a renamed container, each under the game's lease.
//! - [`controller`]: the watch → queue → plan → act loop.
//! - [`metrics`]: the Prometheus metrics.
//! - [`cli`]: `rtctl`, the command-line tool.
//! - [`error_code`]: the stable error codes every failure carries.
//! - [`config`]: the connection settings both binaries share.

pub mod cli;
pub mod config;
pub mod controller;
pub mod error_code;
pub mod failpoint;
pub mod history;
pub mod http;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod runtime;
pub mod status;
pub mod store;

pub use error_code::ErrorCode;
