//! A game's volumes (`spec.volumes`): the mounts its container gets, the
//! checks before anything is stopped for a new container (a host path
//! outside `--allowed-host-paths`, a squatted name, a missing or foreign
//! shared volume), the creation of the game's own volumes before its
//! container, and their removal with the game.
//!
//! A game's own volume is `rtm-<installation>-<game>_<name>`, labelled
//! managed-by, prefix, game and volume name; only a volume with all four is
//! ever mounted or removed as the game's, so no game can take another's
//! data. Which of them outlive the game (`retain: true`) is read at the
//! deletion from the container's [`LABEL_RETAINED_VOLUMES`] label: the
//! document is gone by then (perhaps deleted while no controller ran), the
//! container is what the game last ran with. With no container left to say,
//! every volume is kept and the removal's history entry names them. Shared
//! volumes and host paths are never created or removed.

use std::collections::BTreeSet;
use std::path::Path;

use rtm_core::error_code::ErrorCode;
use rtm_core::failure::Failure;
use rtm_core::model::volume::game_volume_name;
use rtm_core::model::{GameRuntime, VolumeKind};
use rtm_core::records::history::HistoryEntry;
use tracing::{info, warn};

use super::policy::Refusal;
use super::{Lifecycle, runtime_failure};
use crate::runtime::volumes::{LABEL_RETAINED_VOLUMES, LABEL_VOLUME, game_volume_labels};
use crate::runtime::{
    ContainerInfo, ContainerSpec, LABEL_GAME, LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY, Mount,
    MountSource, RuntimeOp, VolumeInfo, VolumeSpec, container_name,
};

/// The Docker name of `game`'s own volume `volume` in the installation of
/// `prefix`.
pub(crate) fn volume_name(prefix: &str, game: &str, volume: &str) -> String {
    game_volume_name(&container_name(prefix, game), volume)
}

/// Fills the container's mounts from `spec.volumes`, and labels it with the
/// game's own volumes that outlive it ([`LABEL_RETAINED_VOLUMES`]).
pub(crate) fn apply(doc: &GameRuntime, prefix: &str, container: &mut ContainerSpec) {
    let game = doc.metadata.name.as_str();
    let mut retained = Vec::new();
    container.mounts = doc
        .spec
        .volumes
        .iter()
        .filter_map(|volume| {
            let source = match volume.kind()? {
                VolumeKind::Game(name) => {
                    if volume.retain {
                        retained.push(name);
                    }
                    MountSource::Volume {
                        name: volume_name(prefix, game, name),
                        labels: game_volume_labels(prefix, game, name),
                    }
                }
                VolumeKind::Shared(name) => MountSource::Volume {
                    name: name.to_owned(),
                    labels: Default::default(),
                },
                VolumeKind::HostPath(path) => MountSource::Bind {
                    path: path.to_owned(),
                },
            };
            Some(Mount {
                source,
                target: volume.container_path.clone(),
                read_only: volume.read_only,
            })
        })
        .collect();
    retained.sort_unstable();
    if !retained.is_empty() {
        container
            .labels
            .insert(LABEL_RETAINED_VOLUMES.to_owned(), retained.join(","));
    }
}

/// Refuses a host path that is not under one of `allowed` (normalised
/// absolute paths, compared by components: `/srv/mapsX` is not under
/// `/srv/maps`). Lexical: a symbolic link under an allowed directory is
/// followed by Docker, so the directories allowed must not hold links
/// someone else controls.
pub(crate) fn admit_host_paths(doc: &GameRuntime, allowed: &[String]) -> Result<(), Refusal> {
    for (i, volume) in doc.spec.volumes.iter().enumerate() {
        let Some(VolumeKind::HostPath(path)) = volume.kind() else {
            continue;
        };
        if allowed.iter().any(|root| Path::new(path).starts_with(root)) {
            continue;
        }
        let list = if allowed.is_empty() {
            "none".to_owned()
        } else {
            allowed.join(", ")
        };
        return Err(Refusal {
            code: ErrorCode::HostPathNotAllowed,
            message: format!(
                "spec.volumes[{i}].source.hostPath {path} is not under this controller's \
                 --allowed-host-paths ({list})"
            ),
        });
    }
    Ok(())
}

/// Judges what Docker holds under the names the document mounts: `found`
/// answers the inspect of a name (`None`: no such volume). Pure, so the
/// rules are tested without Docker.
pub(crate) fn judge_volumes(
    doc: &GameRuntime,
    prefix: &str,
    found: &dyn Fn(&str) -> Option<VolumeInfo>,
) -> Result<(), Failure> {
    let game = doc.metadata.name.as_str();
    for volume in &doc.spec.volumes {
        match volume.kind() {
            Some(VolumeKind::Game(name)) => {
                let docker_name = volume_name(prefix, game, name);
                if let Some(existing) = found(&docker_name) {
                    check_own(&existing, prefix, game, name)?;
                }
            }
            Some(VolumeKind::Shared(name)) => match found(name) {
                None => {
                    return Err(Failure::new(
                        ErrorCode::VolumeNotFound,
                        format!(
                            "shared volume {name} does not exist on the Docker host; create it \
                             there (docker volume create {name}): rtmanager never creates or \
                             removes shared volumes"
                        ),
                    ));
                }
                Some(existing) => check_shared(&existing)?,
            },
            Some(VolumeKind::HostPath(_)) | None => {}
        }
    }
    Ok(())
}

/// A volume under the name of `game`'s own volume `name` is used only when
/// it carries this installation's labels for it.
fn check_own(existing: &VolumeInfo, prefix: &str, game: &str, name: &str) -> Result<(), Failure> {
    if existing.is_volume_of(prefix, game, name) {
        return Ok(());
    }
    Err(Failure::new(
        ErrorCode::VolumeConflict,
        format!(
            "a Docker volume named {} exists but is not this installation's volume {name} of \
             game {game} (its labels: {}); rtmanager never uses or removes it: remove or rename \
             it by hand",
            existing.name,
            describe_labels(existing)
        ),
    ))
}

/// A shared volume must be nobody's own: not made by rtmanager for a game
/// (of this installation or another), not named like one.
fn check_shared(existing: &VolumeInfo) -> Result<(), Failure> {
    let owned = existing.is_managed() || existing.game().is_some();
    if !owned
        && !existing
            .name
            .starts_with(rtm_core::model::volume::RESERVED_VOLUME_PREFIX)
    {
        return Ok(());
    }
    let owner = existing
        .game()
        .map_or_else(String::new, |game| format!(" of game {game}"));
    Err(Failure::new(
        ErrorCode::VolumeNotAllowed,
        format!(
            "volume {} is rtmanager's own volume{owner}: a game cannot mount another game's \
             data as a shared volume",
            existing.name
        ),
    ))
}

fn describe_labels(volume: &VolumeInfo) -> String {
    let ours: Vec<String> = [LABEL_MANAGED_BY, LABEL_PREFIX, LABEL_GAME, LABEL_VOLUME]
        .iter()
        .filter_map(|key| volume.labels.get(*key).map(|v| format!("{key}={v}")))
        .collect();
    if ours.is_empty() {
        "none of rtmanager's".to_owned()
    } else {
        ours.join(", ")
    }
}

/// What a deletion does with the game's volumes: `remove` and `keep`, by
/// Docker name. `volumes` are those labelled as the game's in this
/// installation; only one named as its label says is the game's (another
/// carrying the labels under another name was made by hand, and is kept);
/// `container` is the game's last container, whose label names the retained
/// ones (`None`: nothing says, every one is kept).
pub(crate) fn removal(
    prefix: &str,
    game: &str,
    volumes: &[VolumeInfo],
    container: Option<&ContainerInfo>,
) -> (Vec<String>, Vec<String>) {
    let retained: Option<BTreeSet<&str>> = container.map(|c| {
        c.labels
            .get(LABEL_RETAINED_VOLUMES)
            .map(|list| list.split(',').filter(|v| !v.is_empty()).collect())
            .unwrap_or_default()
    });
    let (mut remove, mut keep) = (Vec::new(), Vec::new());
    for volume in volumes {
        let Some(name) = volume.labels.get(LABEL_VOLUME) else {
            continue;
        };
        if !volume.is_volume_of(prefix, game, name)
            || volume.name != volume_name(prefix, game, name)
        {
            continue;
        }
        match &retained {
            Some(retained) if !retained.contains(name.as_str()) => remove.push(volume.name.clone()),
            _ => keep.push(volume.name.clone()),
        }
    }
    (remove, keep)
}

impl Lifecycle {
    /// Checks the volumes the document mounts on the Docker host before
    /// anything is stopped: its own volumes are absent or its own, its
    /// shared volumes exist and are nobody's own.
    pub(crate) async fn admit_volumes(&self, doc: &GameRuntime) -> Result<(), Failure> {
        let mut found = std::collections::HashMap::new();
        let game = doc.metadata.name.as_str();
        for volume in &doc.spec.volumes {
            let name = match volume.kind() {
                Some(VolumeKind::Game(name)) => volume_name(self.prefix(), game, name),
                Some(VolumeKind::Shared(name)) => name.to_owned(),
                _ => continue,
            };
            let info = self
                .runtime
                .inspect_volume(&name)
                .await
                .map_err(|e| runtime_failure(RuntimeOp::Volume, &e))?;
            found.insert(name, info);
        }
        judge_volumes(doc, self.prefix(), &|name| {
            found.get(name).cloned().flatten()
        })
    }

    /// Creates the game's own volumes that do not exist yet, right before
    /// its container: one that appeared meanwhile under the name without
    /// our labels is a conflict, and the container is not created.
    pub(crate) async fn ensure_volumes(&self, doc: &GameRuntime) -> Result<(), Failure> {
        let game = doc.metadata.name.as_str();
        for volume in &doc.spec.volumes {
            let Some(VolumeKind::Game(name)) = volume.kind() else {
                continue;
            };
            let spec = VolumeSpec {
                name: volume_name(self.prefix(), game, name),
                labels: game_volume_labels(self.prefix(), game, name),
            };
            let made = self
                .runtime
                .create_volume(&spec)
                .await
                .map_err(|e| runtime_failure(RuntimeOp::Volume, &e))?;
            check_own(&made, self.prefix(), game, name)?;
        }
        Ok(())
    }

    /// Removes the game's own volumes after its container went, but those
    /// its last container (`container`) says are retained; with no
    /// container, keeps them all. Best effort: a volume that cannot be
    /// removed (in use by a container made by hand, Docker down) is kept;
    /// every outcome is noted in `entry`, the removal's history entry, so no
    /// volume is left behind silently.
    pub(crate) async fn remove_volumes(
        &self,
        game: &str,
        container: Option<&ContainerInfo>,
        entry: &mut HistoryEntry,
    ) {
        let labels = [
            (LABEL_MANAGED_BY, MANAGED_BY),
            (LABEL_PREFIX, self.prefix()),
            (LABEL_GAME, game),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let volumes = match self.runtime.list_volumes(&labels).await {
            Ok(volumes) => volumes,
            Err(error) => {
                warn!(%game, %error, "listing the game's volumes failed; they are kept");
                super::graceful::add_note(
                    entry,
                    &format!("the game's volumes could not be listed ({error}); any are kept"),
                );
                return;
            }
        };
        let (remove, keep) = removal(self.prefix(), game, &volumes, container);
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        for name in remove {
            match self.runtime.remove_volume(&name).await {
                Ok(()) => removed.push(name),
                Err(error) if error.is_not_found() => removed.push(name),
                Err(error) => {
                    warn!(%game, volume = %name, %error, "removing the game's volume failed; it is kept");
                    failed.push(format!("{name} ({error})"));
                }
            }
        }
        if !removed.is_empty() {
            info!(%game, volumes = ?removed, "removed the game's volumes");
            super::graceful::add_note(entry, &format!("removed volumes {}", removed.join(", ")));
        }
        if !keep.is_empty() {
            let why = if container.is_some() {
                "retain: true"
            } else {
                "no container of the game was left to say which are retained; docker volume rm \
                 them once unneeded"
            };
            super::graceful::add_note(entry, &format!("kept volumes {} ({why})", keep.join(", ")));
        }
        if !failed.is_empty() {
            super::graceful::add_note(
                entry,
                &format!(
                    "could not remove volumes {}; they are kept",
                    failed.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::volumes::game_volume_labels;
    use rtm_core::model::fixtures::game;
    use rtm_core::model::{Volume, VolumeSource};

    const PREFIX: &str = "/rtmanager";

    fn shared(volume: &str, path: &str) -> Volume {
        Volume {
            name: None,
            container_path: path.into(),
            read_only: true,
            retain: false,
            source: Some(VolumeSource {
                volume: Some(volume.into()),
                host_path: None,
            }),
        }
    }

    fn host(path: &str, target: &str) -> Volume {
        Volume {
            source: Some(VolumeSource {
                volume: None,
                host_path: Some(path.into()),
            }),
            read_only: false,
            ..shared("x", target)
        }
    }

    fn three() -> GameRuntime {
        let mut doc = game("g1").volume("saves", "/data").build();
        doc.spec.volumes[0].retain = true;
        doc.spec.volumes.push(shared("shared-maps", "/maps"));
        doc.spec.volumes.push(host("/srv/maps", "/host"));
        doc
    }

    fn own(game: &str, volume: &str) -> VolumeInfo {
        VolumeInfo {
            name: volume_name(PREFIX, game, volume),
            labels: game_volume_labels(PREFIX, game, volume),
        }
    }

    #[test]
    fn the_mounts_are_the_games_volume_the_shared_volume_and_the_bind() {
        let doc = three();
        let mut container = ContainerSpec::new("g1", "engine:1");
        apply(&doc, PREFIX, &mut container);
        let own_name = format!("{}_saves", container_name(PREFIX, "g1"));
        assert_eq!(
            container.mounts,
            [
                Mount {
                    source: MountSource::Volume {
                        name: own_name,
                        labels: game_volume_labels(PREFIX, "g1", "saves"),
                    },
                    target: "/data".into(),
                    read_only: false,
                },
                Mount {
                    source: MountSource::Volume {
                        name: "shared-maps".into(),
                        labels: Default::default(),
                    },
                    target: "/maps".into(),
                    read_only: true,
                },
                Mount {
                    source: MountSource::Bind {
                        path: "/srv/maps".into()
                    },
                    target: "/host".into(),
                    read_only: false,
                },
            ]
        );
        assert_eq!(container.labels[LABEL_RETAINED_VOLUMES], "saves");
        let mut plain = ContainerSpec::new("g1", "engine:1");
        apply(
            &game("g1").volume("saves", "/data").build(),
            PREFIX,
            &mut plain,
        );
        assert!(!plain.labels.contains_key(LABEL_RETAINED_VOLUMES));
    }

    #[test]
    fn host_paths_are_allowed_by_whole_components_only() {
        let mut doc = game("g1").build();
        doc.spec.volumes.push(host("/srv/maps", "/a"));
        assert_eq!(
            admit_host_paths(&doc, &[]).unwrap_err().code,
            ErrorCode::HostPathNotAllowed,
            "none allowed by default"
        );
        assert!(admit_host_paths(&doc, &["/srv/maps".into()]).is_ok());
        assert!(admit_host_paths(&doc, &["/srv".into()]).is_ok());
        assert!(admit_host_paths(&doc, &["/".into()]).is_ok());
        let refusal =
            admit_host_paths(&doc, &["/srv/map".into(), "/srv/other".into()]).unwrap_err();
        assert_eq!(
            refusal.message,
            "spec.volumes[0].source.hostPath /srv/maps is not under this controller's \
             --allowed-host-paths (/srv/map, /srv/other)"
        );
        doc.spec.volumes[0] = host("/srv/mapsX", "/a");
        assert!(admit_host_paths(&doc, &["/srv/maps".into()]).is_err());
        doc.spec.volumes[0] = host("/srv/maps/level1", "/a");
        assert!(admit_host_paths(&doc, &["/srv/maps".into()]).is_ok());
    }

    #[test]
    fn a_games_own_volume_is_used_when_absent_or_labelled_for_it_only() {
        let doc = game("g1").volume("saves", "/data").build();
        assert!(judge_volumes(&doc, PREFIX, &|_| None).is_ok());
        assert!(judge_volumes(&doc, PREFIX, &|_| Some(own("g1", "saves"))).is_ok());
        for squatter in [
            VolumeInfo {
                name: volume_name(PREFIX, "g1", "saves"),
                labels: Default::default(),
            },
            VolumeInfo {
                name: volume_name(PREFIX, "g1", "saves"),
                labels: game_volume_labels("/other", "g1", "saves"),
            },
            VolumeInfo {
                name: volume_name(PREFIX, "g1", "saves"),
                labels: game_volume_labels(PREFIX, "g2", "saves"),
            },
        ] {
            let failure = judge_volumes(&doc, PREFIX, &|_| Some(squatter.clone())).unwrap_err();
            assert_eq!(failure.code, ErrorCode::VolumeConflict, "{squatter:?}");
        }
    }

    #[test]
    fn a_shared_volume_must_exist_and_be_nobodys_own() {
        let mut doc = game("g1").build();
        doc.spec.volumes.push(shared("shared-maps", "/maps"));
        let missing = judge_volumes(&doc, PREFIX, &|_| None).unwrap_err();
        assert_eq!(missing.code, ErrorCode::VolumeNotFound);
        assert!(missing.message.contains("docker volume create shared-maps"));
        let plain = |name: &str| {
            Some(VolumeInfo {
                name: name.to_owned(),
                labels: [("owner".to_owned(), "ops".to_owned())].into(),
            })
        };
        assert!(judge_volumes(&doc, PREFIX, &plain).is_ok());
        // Another game's own volume, relabelled under a plain name by hand, or
        // one of another installation: refused either way.
        for labels in [
            game_volume_labels(PREFIX, "g2", "saves"),
            game_volume_labels("/other", "g2", "saves"),
            [(LABEL_GAME.to_owned(), "g2".to_owned())].into(),
        ] {
            let foreign = VolumeInfo {
                name: "shared-maps".into(),
                labels,
            };
            let failure = judge_volumes(&doc, PREFIX, &|_| Some(foreign.clone())).unwrap_err();
            assert_eq!(failure.code, ErrorCode::VolumeNotAllowed);
        }
    }

    #[test]
    fn a_deletion_removes_the_games_volumes_but_the_retained_and_keeps_all_without_a_container() {
        let volumes = [
            own("g1", "saves"),
            own("g1", "cache"),
            own("g1", "old"),
            // Labelled as g1's but named otherwise: made by hand, never removed.
            VolumeInfo {
                name: "copy-of-saves".into(),
                labels: game_volume_labels(PREFIX, "g1", "saves"),
            },
        ];
        let mut container = crate::runtime::ContainerInfo {
            id: "c1".into(),
            name: container_name(PREFIX, "g1"),
            image: "engine:1".into(),
            image_id: "sha256:1".into(),
            hostname: "g1".into(),
            labels: [(LABEL_RETAINED_VOLUMES.to_owned(), "saves".to_owned())].into(),
            state: crate::runtime::ContainerState::Exited,
            exit_code: Some(0),
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: None,
            address: None,
            ports: Vec::new(),
            health: None,
        };
        let (remove, keep) = removal(PREFIX, "g1", &volumes, Some(&container));
        assert_eq!(
            remove,
            [
                volume_name(PREFIX, "g1", "cache"),
                volume_name(PREFIX, "g1", "old")
            ],
            "a volume no longer in the spec goes with the game too"
        );
        assert_eq!(keep, [volume_name(PREFIX, "g1", "saves")]);
        container.labels.clear();
        let (remove, keep) = removal(PREFIX, "g1", &volumes, Some(&container));
        assert_eq!(remove.len(), 3);
        assert!(keep.is_empty());
        let (remove, keep) = removal(PREFIX, "g1", &volumes, None);
        assert!(remove.is_empty(), "nothing says which are disposable");
        assert_eq!(keep.len(), 3);
    }

    /// The reconciler over the fake Docker: what the controller does with
    /// volumes, decided by these rules and carried out by the lifecycle.
    mod reconciled {
        use super::*;
        use crate::desired::Desired;
        use crate::fixture::{self, World};

        async fn apply(w: &World, doc: &GameRuntime) {
            let name = doc.metadata.name.clone();
            let stored = match w.documents.get(&name).await.unwrap() {
                Some(old) => {
                    let rv = old.metadata.resource_version.unwrap().parse().unwrap();
                    w.documents.update(doc, rv).await.unwrap()
                }
                None => w.documents.create(doc).await.unwrap(),
            };
            w.cache.apply(name, Some(Desired::Valid(Box::new(stored))));
        }

        fn running_id(w: &World, game: &str) -> Option<String> {
            w.runtime
                .container(&container_name(PREFIX, game))
                .filter(|c| c.is_running())
                .map(|c| c.id)
        }

        async fn last_error(w: &World, game: &str) -> Option<ErrorCode> {
            let history = w.reconciler.lifecycle().history();
            let entries = history.recent(game, 10).await.unwrap();
            entries.first().and_then(|e| e.error_code)
        }

        #[tokio::test]
        async fn the_same_volume_is_mounted_again_after_a_recreate_and_goes_with_the_game() {
            let w = fixture::world(100).await;
            let doc = game("g1").volume("saves", "/data").build();
            apply(&w, &doc).await;
            w.converge("g1").await;
            let first = running_id(&w, "g1").expect("the game runs");
            let volume = volume_name(PREFIX, "g1", "saves");
            assert_eq!(
                w.runtime.volume(&volume).map(|v| v.labels),
                Some(game_volume_labels(PREFIX, "g1", "saves")),
                "created, labelled, before the container"
            );
            let mut changed = doc.clone();
            changed.spec.env.push(rtm_core::model::EnvVar {
                name: "SEED".into(),
                value: "1".into(),
            });
            apply(&w, &changed).await;
            w.converge("g1").await;
            let second = running_id(&w, "g1").expect("recreated");
            assert_ne!(first, second);
            let spec = w.runtime.spec_of(&second).unwrap();
            assert!(
                matches!(&spec.mounts[0].source, MountSource::Volume { name, .. } if *name == volume)
            );
            assert_eq!(w.runtime.volume_names().len(), 1, "no second volume");
            w.delete("g1").await;
            w.converge("g1").await;
            assert!(w.runtime.container(&container_name(PREFIX, "g1")).is_none());
            assert_eq!(w.runtime.volume(&volume), None, "removed with the game");
        }

        #[tokio::test]
        async fn a_refused_volume_never_stops_the_running_container() {
            let w = fixture::world(100).await;
            let doc = game("g1").build();
            apply(&w, &doc).await;
            w.converge("g1").await;
            let running = running_id(&w, "g1").expect("the game runs");
            let squatted = volume_name(PREFIX, "g1", "saves");
            w.runtime.add_volume(&squatted, &[("owner", "someone")]);
            let cases: [(GameRuntime, ErrorCode); 3] = [
                (
                    game("g1").volume("saves", "/data").build(),
                    ErrorCode::VolumeConflict,
                ),
                (
                    {
                        let mut d = game("g1").build();
                        d.spec.volumes.push(shared("missing", "/maps"));
                        d
                    },
                    ErrorCode::VolumeNotFound,
                ),
                (
                    {
                        let mut d = game("g1").build();
                        d.spec.volumes.push(host("/srv/maps", "/maps"));
                        d
                    },
                    ErrorCode::HostPathNotAllowed,
                ),
            ];
            for (refused, code) in cases {
                apply(&w, &refused).await;
                let _ = w.reconciler.reconcile("g1").await;
                assert_eq!(last_error(&w, "g1").await, Some(code));
                assert_eq!(
                    running_id(&w, "g1").as_deref(),
                    Some(running.as_str()),
                    "{code}: the old container runs on"
                );
            }
            assert_eq!(
                w.runtime.volume(&squatted).map(|v| v.labels.len()),
                Some(1),
                "someone else's volume untouched"
            );
            w.delete("g1").await;
            w.converge("g1").await;
            assert!(w.runtime.volume(&squatted).is_some(), "and never removed");
        }

        #[tokio::test]
        async fn without_a_container_to_say_a_deletion_keeps_the_volumes_and_says_so() {
            let w = fixture::world(100).await;
            let doc = game("g1").volume("saves", "/data").build();
            apply(&w, &doc).await;
            w.converge("g1").await;
            let volume = volume_name(PREFIX, "g1", "saves");
            w.runtime
                .remove_by_hand(&container_name(PREFIX, "g1"))
                .unwrap();
            w.delete("g1").await;
            w.converge("g1").await;
            assert!(w.runtime.volume(&volume).is_some());
            let history = w.reconciler.lifecycle().history();
            let entries = history.recent("g1", 10).await.unwrap();
            let remove = entries
                .iter()
                .find(|e| e.op_kind == rtm_core::model::OpKind::Remove)
                .expect("a remove entry");
            let note = remove.note.clone().unwrap_or_default();
            assert!(
                note.contains(&format!("kept volumes {volume} (no container")),
                "{note}"
            );
        }
    }
}
