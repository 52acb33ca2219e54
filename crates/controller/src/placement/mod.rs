//! Many hosts: the node this controller serves and where each game runs.
//!
//! - [`options`]: the node's offer and the failure bounds (`--node-labels`, `--capacity`,
//!   `--port-range`, `--placement-strategy`, `--node-failure-grace`, `--self-fence-after`).
//! - `view`: the nodes, their cordons and which controllers are live, as the watches of
//!   `nodes/`, `cordons/` and `controllers/` keep them.
//! - `assignments`: where each game runs (`assignments/`), and [`Ownership`]: the games
//!   this node's controller reconciles — exactly those assigned to it.
//! - `registry`: this node's record, written at each session start (one live controller
//!   per node name).
//! - `decide`: what the scheduler writes (pure); `scheduler`: the elected scheduler that
//!   writes it, by compare-and-swap only.
//! - `fence`: the self-fence — with no etcd for `--self-fence-after`, every container of
//!   this node is stopped, so a game never runs on two hosts.

pub(crate) mod assignments;
pub(crate) mod decide;
pub(crate) mod fence;
pub mod options;
pub(crate) mod registry;
pub(crate) mod scheduler;
pub(crate) mod view;

pub use options::PlacementArgs;

pub(crate) use assignments::{AssignmentCache, Ownership};
pub(crate) use view::{Liveness, NodesView};
