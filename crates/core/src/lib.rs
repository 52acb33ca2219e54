//! The core of rtmanager, shared by the controller and `rtctl`: what a game
//! is, where it is kept, and the records written about it.
//!
//! - [`model`]: the `GameRuntime` document — types, parsing, validation,
//!   defaults, the CRD schema.
//! - [`store`]: the `Store` port over etcd (the only user of `etcd_client`),
//!   its in-memory twin (feature `testing`) and the key layout.
//! - [`records`]: the records under the prefix, one home each — documents,
//!   operation history, lease records and heartbeats.
//! - [`ports`]: host ports — the policy on which may be published and the
//!   claims that give each to one game.
//! - [`schedule`]: cron expressions in a time zone, for scheduled restarts.
//! - [`config`]: the etcd connection settings both binaries share.
//! - [`error_code`]: the stable error codes every failure carries, and
//!   [`failure`]: the one error that crosses a layer, code and source kept.

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod error_code;
pub mod failure;
pub mod model;
pub mod placement;
pub mod ports;
pub mod records;
pub mod schedule;
pub mod store;

pub use error_code::ErrorCode;
pub use failure::{Coded, Failure};
