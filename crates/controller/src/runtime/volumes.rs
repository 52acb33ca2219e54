//! The runtime's volume types: a container's mounts ([`Mount`]) and the
//! Docker volumes the controller creates, inspects and removes for a game
//! ([`VolumeSpec`], [`VolumeInfo`]). The calls are on
//! [`ContainerRuntime`](super::ContainerRuntime).

use std::collections::BTreeMap;

use super::{LABEL_GAME, LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY};

/// Label on a game's own volume carrying its name in the game
/// (`spec.volumes[].name`).
pub const LABEL_VOLUME: &str = "rtmanager.dev/volume";

/// Label on a container listing, comma-separated and sorted, the game's own
/// volumes that outlive the game (`retain: true`); absent when none does.
/// The container is what a deletion asks, so a game deleted while no
/// controller ran is judged by what it last ran with.
pub const LABEL_RETAINED_VOLUMES: &str = "rtmanager.dev/retained-volumes";

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub source: MountSource,
    /// The absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a [`Mount`] mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A Docker named volume. `labels` is what Docker gives it should it have
    /// to create it at the container's create (the controller creates the
    /// game's own volumes first; a shared volume gets none).
    Volume {
        /// The Docker volume's name.
        name: String,
        /// Labels for a volume Docker creates.
        labels: BTreeMap<String, String>,
    },
    /// A directory of the Docker host, bind-mounted (Docker refuses a
    /// missing one; it never creates it).
    Bind {
        /// The host path.
        path: String,
    },
}

/// A Docker volume to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// What the runtime observed about one Docker volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl VolumeInfo {
    /// Carries `rtmanager.dev/managed-by=rtmanager`.
    pub fn is_managed(&self) -> bool {
        self.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
    }

    /// The game it belongs to, from its [`LABEL_GAME`] label.
    pub fn game(&self) -> Option<&str> {
        self.labels.get(LABEL_GAME).map(String::as_str)
    }

    /// Whether it is the volume `volume` of `game` in the installation of
    /// `prefix`: the one test before a volume is mounted as, or removed as,
    /// a game's own.
    pub fn is_volume_of(&self, prefix: &str, game: &str, volume: &str) -> bool {
        self.is_managed()
            && self.labels.get(LABEL_PREFIX).map(String::as_str) == Some(prefix)
            && self.game() == Some(game)
            && self.labels.get(LABEL_VOLUME).map(String::as_str) == Some(volume)
    }
}

/// The labels of `game`'s own volume `volume` in the installation of
/// `prefix`.
pub fn game_volume_labels(prefix: &str, game: &str, volume: &str) -> BTreeMap<String, String> {
    [
        (LABEL_MANAGED_BY, MANAGED_BY),
        (LABEL_PREFIX, prefix),
        (LABEL_GAME, game),
        (LABEL_VOLUME, volume),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_is_a_games_only_with_every_label_of_it() {
        let labels = game_volume_labels("/p", "g1", "saves");
        let ours = VolumeInfo {
            name: "v".into(),
            labels: labels.clone(),
        };
        assert!(ours.is_volume_of("/p", "g1", "saves"));
        assert!(!ours.is_volume_of("/other", "g1", "saves"));
        assert!(!ours.is_volume_of("/p", "g2", "saves"));
        assert!(!ours.is_volume_of("/p", "g1", "maps"));
        for missing in [LABEL_MANAGED_BY, LABEL_PREFIX, LABEL_GAME, LABEL_VOLUME] {
            let mut labels = labels.clone();
            labels.remove(missing);
            let partial = VolumeInfo {
                name: "v".into(),
                labels,
            };
            assert!(!partial.is_volume_of("/p", "g1", "saves"), "{missing}");
        }
    }
}
