//! Health checks: running the probes of `spec.healthCheck` on the game's node.

pub(crate) mod probe;
