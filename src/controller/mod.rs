//! The controller: watches desired state in etcd and converges every game.

pub mod config;
pub mod plan;
pub mod queue;
