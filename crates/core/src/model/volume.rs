//! `spec.volumes`: what a game mounts (its own named volumes, shared named volumes, host
//! paths), the rules each entry must follow, and the names the controller gives a game's
//! own volumes.
//!
//! Validation here is what can be judged from the document alone; what depends on the
//! controller (its `--allowed-host-paths`) or on the Docker host (who owns a volume) is
//! checked by the controller at reconcile, before anything is stopped.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{FieldError, Quoted};

/// The most entries `spec.volumes` may hold: far more than a game server mounts (saves,
/// maps, mods, configs), few enough that one document cannot make the controller create
/// hundreds of Docker volumes.
pub const MAX_VOLUMES: usize = 16;

/// The longest shared volume name or path accepted: Docker's volume names and mount paths
/// end up as file names and paths on the host.
const MAX_VOLUME_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;

/// The prefix of every name the controller gives a Docker object (containers
/// `rtm-<installation>-<game>`, a game's volumes `rtm-<installation>-<game>_<name>`, the
/// games' network): a shared volume may not carry it, so no game mounts another's data.
pub const RESERVED_VOLUME_PREFIX: &str = "rtm-";

/// Where a container path may not go: the kernel's and Docker's own mounts.
const RESERVED_CONTAINER_PATHS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// One volume mounted into the game's container.
///
/// Exactly one of: a game's own named volume (`name`, no `source`), created by the
/// controller, kept across restarts and recreates, removed with the game unless `retain`;
/// a shared named volume (`source.volume`), made by the operator and never created or
/// removed by the controller; a host directory (`source.hostPath`), allowed only under the
/// controller's `--allowed-host-paths`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// The volume's name in this game: 1 to 63 lowercase letters, digits and '-'
    /// (e.g. `saves`), unique among the game's volumes. Without `source` it names the
    /// game's own Docker volume, `rtm-<installation>-<game>_<name>`; with one it is optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the volume appears in the container: an absolute, normalised path such as
    /// `/data` (not `/`, no `.` or `..`, no trailing `/`, not under `/proc`, `/sys` or
    /// `/dev`), unique among the game's volumes.
    #[schemars(length(min = 1, max = 4096))]
    pub container_path: String,
    /// Mounts the volume read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Keeps the game's own volume when the game is deleted (by default it is removed with
    /// the game). Only for a volume without `source`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retain: bool,
    /// What to mount instead of the game's own volume: a shared named volume or a host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSource>,
}

/// A volume the game does not own: exactly one of `volume` and `hostPath`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSource {
    /// A Docker volume made by the operator (`docker volume create shared-maps`), shared by
    /// the games that name it. The controller never creates or removes it: a game naming a
    /// missing one is refused (`volume_not_found`). Names starting with `rtm-` are the
    /// controller's own and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// An absolute, normalised directory on the Docker host, bind-mounted. Refused
    /// (`host_path_not_allowed`) unless it lies under one of the controller's
    /// `--allowed-host-paths`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
}

/// What one `spec.volumes` entry mounts, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind<'a> {
    /// The game's own named volume, by its name in the game.
    Game(&'a str),
    /// A shared named volume, by its Docker name.
    Shared(&'a str),
    /// A host directory.
    HostPath(&'a str),
}

impl Volume {
    /// What the entry mounts; `None` for an entry validation refuses (neither or both of a
    /// name-only volume and a source).
    pub fn kind(&self) -> Option<VolumeKind<'_>> {
        match (&self.name, &self.source) {
            (Some(name), None) => Some(VolumeKind::Game(name)),
            (
                _,
                Some(VolumeSource {
                    volume: Some(volume),
                    host_path: None,
                }),
            ) => Some(VolumeKind::Shared(volume)),
            (
                _,
                Some(VolumeSource {
                    volume: None,
                    host_path: Some(path),
                }),
            ) => Some(VolumeKind::HostPath(path)),
            _ => None,
        }
    }
}

/// The Docker name of a game's own volume: `rtm-<installation>-<game>_<name>`, its
/// container's name (`rtm-<installation>-<game>`), `_`, the volume's name: two games, or
/// two installations, never want the same volume. `_` is in neither a game's name nor a
/// volume's, so game `g1`'s volume `a-b` and game `g1-a`'s volume `b` differ (with `-` both
/// would be `rtm-…-g1-a-b`).
pub fn game_volume_name(container_name: &str, volume: &str) -> String {
    format!("{container_name}_{volume}")
}

/// The hashed form of one `spec.volumes` entry: everything that changes the container's
/// mounts, and `retain`, which the container's labels carry (the controller decides at
/// deletion from the container which volumes go: see the controller's lifecycle/volumes.rs).
#[derive(Debug, Serialize)]
pub(crate) struct VolumeInputs<'a> {
    container_path: &'a str,
    name: Option<&'a str>,
    volume: Option<&'a str>,
    host_path: Option<&'a str>,
    read_only: bool,
    retain: bool,
}

/// `spec.volumes` as the recreate hash sees it: `None` when empty, so documents without
/// volumes keep their hash; else sorted by container path, as their order changes nothing
/// in Docker.
pub(crate) fn recreate_inputs(volumes: &[Volume]) -> Option<Vec<VolumeInputs<'_>>> {
    if volumes.is_empty() {
        return None;
    }
    let mut inputs: Vec<VolumeInputs<'_>> = volumes
        .iter()
        .map(|v| {
            let source = v.source.as_ref();
            VolumeInputs {
                container_path: &v.container_path,
                name: v.name.as_deref(),
                volume: source.and_then(|s| s.volume.as_deref()),
                host_path: source.and_then(|s| s.host_path.as_deref()),
                read_only: v.read_only,
                retain: v.retain,
            }
        })
        .collect();
    inputs.sort_by(|a, b| a.container_path.cmp(b.container_path));
    Some(inputs)
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Checks `spec.volumes`: the count, each entry's kind, names, paths and flags, and that
/// names and container paths are unique.
pub(crate) fn validate_volumes(volumes: &[Volume], errors: &mut Vec<FieldError>) {
    if volumes.len() > MAX_VOLUMES {
        errors.push(FieldError::new(
            "spec.volumes",
            format!("at most {MAX_VOLUMES} volumes, got {}", volumes.len()),
        ));
        return;
    }
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = |field: &str| format!("spec.volumes[{i}].{field}");
        if let Some(name) = &volume.name {
            if !super::validate::is_dns1123_label(name) {
                errors.push(FieldError::new(
                    at("name"),
                    format!(
                        "invalid volume name {:?}: must be 1 to 63 characters of lowercase \
                         letters (a-z), digits (0-9) and '-', starting and ending with a \
                         letter or digit, such as \"saves\"",
                        Quoted(name)
                    ),
                ));
            } else if !names.insert(name.as_str()) {
                errors.push(FieldError::new(
                    at("name"),
                    format!("duplicate volume name {name:?}"),
                ));
            }
        }
        match container_path(&volume.container_path) {
            Err(why) => errors.push(FieldError::new(at("containerPath"), why)),
            Ok(()) => {
                if !paths.insert(volume.container_path.as_str()) {
                    errors.push(FieldError::new(
                        at("containerPath"),
                        format!(
                            "{:?} is mounted by another volume already",
                            volume.container_path
                        ),
                    ));
                }
            }
        }
        source(volume, &at, errors);
    }
}

/// The rules of one entry's kind: exactly one of a name alone, `source.volume` and
/// `source.hostPath`; `retain` only on the game's own volume.
fn source(volume: &Volume, at: &dyn Fn(&str) -> String, errors: &mut Vec<FieldError>) {
    let Some(source) = &volume.source else {
        if volume.name.is_none() {
            errors.push(FieldError::new(
                at("name"),
                "a volume needs a name (the game's own volume) or a source (source.volume or \
                 source.hostPath)",
            ));
        }
        return;
    };
    if volume.retain {
        errors.push(FieldError::new(
            at("retain"),
            "only a game's own volume (no source) can be retained: the controller never \
             removes a shared volume or a host path",
        ));
    }
    match (&source.volume, &source.host_path) {
        (Some(_), Some(_)) => errors.push(FieldError::new(
            at("source"),
            "give one of source.volume and source.hostPath, not both",
        )),
        (None, None) => errors.push(FieldError::new(
            at("source"),
            "give one of source.volume and source.hostPath",
        )),
        (Some(name), None) => {
            if let Err(why) = shared_volume_name(name) {
                errors.push(FieldError::new(at("source.volume"), why));
            }
        }
        (None, Some(path)) => {
            if let Err(why) = absolute_normal_path(path) {
                errors.push(FieldError::new(at("source.hostPath"), why));
            }
        }
    }
}

/// Docker's rule for volume names (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), and not one of ours.
fn shared_volume_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = name.len() >= 2
        && name.len() <= MAX_VOLUME_NAME_LENGTH
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(format!(
            "invalid Docker volume name {:?}: 2 to {MAX_VOLUME_NAME_LENGTH} letters, digits, \
             '_', '.' and '-', starting with a letter or digit",
            Quoted(name)
        ));
    }
    if name.starts_with(RESERVED_VOLUME_PREFIX) {
        return Err(format!(
            "{name:?}: names starting with {RESERVED_VOLUME_PREFIX:?} are rtmanager's own \
             (games' volumes); a game cannot mount another game's volume"
        ));
    }
    Ok(())
}

/// A container path: absolute and normal, not `/`, not the kernel's or Docker's own.
fn container_path(path: &str) -> Result<(), String> {
    absolute_normal_path(path)?;
    if path == "/" {
        return Err("cannot mount over the container's root \"/\"".to_owned());
    }
    if let Some(reserved) = RESERVED_CONTAINER_PATHS
        .iter()
        .find(|reserved| Path::new(path).starts_with(reserved))
    {
        return Err(format!(
            "{path:?} is under {reserved}, which the kernel and Docker provide"
        ));
    }
    Ok(())
}

/// An absolute path written in its normal form: `/` then components separated by single
/// `/`, no `.` or `..`, no trailing `/`, no NUL. Normal form makes "the same path" a
/// comparison of strings (unique container paths) and of components (the allow-list).
fn absolute_normal_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LENGTH || path.contains('\0') {
        return Err(format!(
            "{:?} is not a path: at most {MAX_PATH_LENGTH} bytes, no NUL",
            Quoted(path)
        ));
    }
    if !path.starts_with('/') {
        return Err(format!("{:?} must be an absolute path", Quoted(path)));
    }
    if Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!("{:?} must not contain \"..\"", Quoted(path)));
    }
    let normal = normalise(path);
    if normal != path {
        return Err(format!(
            "{:?} is not in normal form: write it as {normal:?}",
            Quoted(path)
        ));
    }
    Ok(())
}

/// `path` with `.` components, repeated and trailing `/` dropped (`..` kept: the callers
/// refuse it). Lexical only: symbolic links are not resolved.
pub fn normalise(path: &str) -> String {
    let mut normal = String::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => normal.push_str("/.."),
            Component::Normal(part) => {
                normal.push('/');
                normal.push_str(&part.to_string_lossy());
            }
        }
    }
    if normal.is_empty() {
        normal.push('/');
    }
    normal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::game;
    use crate::model::{GameRuntime, parse_document, validate};

    fn game_volume(name: &str, path: &str) -> Volume {
        Volume {
            name: Some(name.into()),
            container_path: path.into(),
            read_only: false,
            retain: false,
            source: None,
        }
    }

    fn shared(volume: &str, path: &str) -> Volume {
        Volume {
            name: None,
            source: Some(VolumeSource {
                volume: Some(volume.into()),
                host_path: None,
            }),
            ..game_volume("x", path)
        }
    }

    fn host(host_path: &str, path: &str) -> Volume {
        Volume {
            name: None,
            source: Some(VolumeSource {
                volume: None,
                host_path: Some(host_path.into()),
            }),
            ..game_volume("x", path)
        }
    }

    fn with(volumes: Vec<Volume>) -> GameRuntime {
        let mut doc = game("g1").build();
        doc.spec.volumes = volumes;
        doc
    }

    /// The paths of the fields the validation names, in order.
    fn refused(volumes: Vec<Volume>) -> Vec<String> {
        match validate(&with(volumes)) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.path).collect(),
        }
    }

    #[test]
    fn the_three_kinds_of_the_issue_parse_and_validate() {
        let doc = parse_document(
            b"apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec:\n  image: engine:1\n  volumes:\n\
             \x20 - {name: saves, containerPath: /data}\n\
             \x20 - {name: maps, containerPath: /maps, readOnly: true, source: {volume: shared-maps}}\n\
             \x20 - {containerPath: /host, source: {hostPath: /srv/maps}}\n",
        )
        .unwrap();
        let kinds: Vec<_> = doc.spec.volumes.iter().map(|v| v.kind().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                VolumeKind::Game("saves"),
                VolumeKind::Shared("shared-maps"),
                VolumeKind::HostPath("/srv/maps")
            ]
        );
        assert!(doc.spec.volumes[1].read_only);
        // Written back the way it was read, defaults left out.
        let yaml = crate::model::to_yaml(&doc);
        assert!(yaml.contains("containerPath: /data"), "{yaml}");
        assert!(!yaml.contains("retain"), "{yaml}");
    }

    #[test]
    fn unknown_fields_of_a_volume_are_refused_with_their_path() {
        let err = parse_document(
            b"apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec:\n  image: engine:1\n  volumes: [{name: saves, mountPath: /data}]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("mountPath"), "{err}");
    }

    #[test]
    fn volume_names_are_dns_labels_and_unique() {
        assert_eq!(
            refused(vec![game_volume("Saves", "/data")]),
            ["spec.volumes[0].name"]
        );
        assert_eq!(
            refused(vec![game_volume("-a", "/data")]),
            ["spec.volumes[0].name"]
        );
        assert_eq!(
            refused(vec![game_volume(&"a".repeat(64), "/data")]),
            ["spec.volumes[0].name"]
        );
        assert_eq!(
            refused(vec![game_volume("saves", "/a"), game_volume("saves", "/b")]),
            ["spec.volumes[1].name"]
        );
        assert!(refused(vec![game_volume("saves", "/a"), game_volume("maps", "/b")]).is_empty());
    }

    #[test]
    fn container_paths_are_absolute_normal_unique_and_not_the_root_or_the_kernels() {
        for bad in [
            "data", "/", "/data/", "/data//x", "/./data", "/data/..", "/a/../b", "/proc",
            "/proc/x", "/sys/fs", "/dev/shm", "", "/da\0ta",
        ] {
            assert_eq!(
                refused(vec![game_volume("saves", bad)]),
                ["spec.volumes[0].containerPath"],
                "{bad:?}"
            );
        }
        // Lexical components: /devices is not under /dev.
        assert!(refused(vec![game_volume("saves", "/devices")]).is_empty());
        assert_eq!(
            refused(vec![game_volume("a", "/data"), game_volume("b", "/data")]),
            ["spec.volumes[1].containerPath"]
        );
    }

    #[test]
    fn each_volume_is_exactly_one_kind() {
        let mut nothing = game_volume("x", "/data");
        nothing.name = None;
        assert_eq!(refused(vec![nothing]), ["spec.volumes[0].name"]);
        let mut both = shared("maps", "/maps");
        both.source.as_mut().unwrap().host_path = Some("/srv/maps".into());
        assert_eq!(refused(vec![both]), ["spec.volumes[0].source"]);
        let mut empty = shared("maps", "/maps");
        empty.source = Some(VolumeSource::default());
        assert_eq!(refused(vec![empty]), ["spec.volumes[0].source"]);
        // A name with a source is fine (a label for people), still unique.
        let mut named = shared("maps", "/maps");
        named.name = Some("maps".into());
        assert!(refused(vec![named]).is_empty());
    }

    #[test]
    fn only_a_games_own_volume_is_retained() {
        let mut kept = game_volume("saves", "/data");
        kept.retain = true;
        assert!(refused(vec![kept]).is_empty());
        let mut shared_kept = shared("maps", "/maps");
        shared_kept.retain = true;
        assert_eq!(refused(vec![shared_kept]), ["spec.volumes[0].retain"]);
    }

    #[test]
    fn shared_volumes_follow_dockers_names_and_never_name_ours() {
        for bad in ["a", "-maps", "maps/x", "rtm-1a2b3c-g2-saves", "rtm-games"] {
            assert_eq!(
                refused(vec![shared(bad, "/maps")]),
                ["spec.volumes[0].source.volume"],
                "{bad:?}"
            );
        }
        assert!(refused(vec![shared("Shared_maps.v2", "/maps")]).is_empty());
    }

    #[test]
    fn host_paths_are_absolute_and_normal_without_dot_dot() {
        for bad in [
            "srv/maps",
            "/srv/maps/",
            "/srv/../etc",
            "/srv//maps",
            "/srv/./maps",
        ] {
            assert_eq!(
                refused(vec![host(bad, "/host")]),
                ["spec.volumes[0].source.hostPath"],
                "{bad:?}"
            );
        }
        assert!(refused(vec![host("/srv/maps", "/host")]).is_empty());
    }

    #[test]
    fn the_count_is_bounded() {
        let many: Vec<Volume> = (0..=MAX_VOLUMES)
            .map(|i| game_volume(&format!("v{i}"), &format!("/v{i}")))
            .collect();
        assert_eq!(refused(many), ["spec.volumes"]);
        let enough: Vec<Volume> = (0..MAX_VOLUMES)
            .map(|i| game_volume(&format!("v{i}"), &format!("/v{i}")))
            .collect();
        assert!(refused(enough).is_empty());
    }

    #[test]
    fn normalising_drops_dots_and_repeated_and_trailing_slashes() {
        assert_eq!(normalise("/srv//maps/./"), "/srv/maps");
        assert_eq!(normalise("/"), "/");
        assert_eq!(normalise("/a/../b"), "/a/../b");
    }

    #[test]
    fn volumes_change_the_recreate_hash_only_when_set_and_not_by_their_order() {
        let plain = game("g1").build();
        let with_none = with(Vec::new());
        assert_eq!(
            plain.spec.recreate_hash("g1"),
            with_none.spec.recreate_hash("g1"),
            "a document without volumes keeps its hash"
        );
        let two = with(vec![game_volume("a", "/a"), shared("maps", "/maps")]);
        let swapped = with(vec![shared("maps", "/maps"), game_volume("a", "/a")]);
        assert_ne!(two.spec.recreate_hash("g1"), plain.spec.recreate_hash("g1"));
        assert_eq!(
            two.spec.recreate_hash("g1"),
            swapped.spec.recreate_hash("g1")
        );
        let changes: [fn(&mut Volume); 5] = [
            |v| v.read_only = true,
            |v| v.retain = true,
            |v| v.container_path = "/b".into(),
            |v| v.name = Some("b".into()),
            |v| {
                v.source = Some(VolumeSource {
                    volume: None,
                    host_path: Some("/srv".into()),
                })
            },
        ];
        for change in changes {
            let mut changed = two.clone();
            change(&mut changed.spec.volumes[0]);
            assert_ne!(
                changed.spec.recreate_hash("g1"),
                two.spec.recreate_hash("g1"),
                "{:?}",
                changed.spec.volumes[0]
            );
        }
    }

    #[test]
    fn a_games_volume_is_named_after_its_container() {
        assert_eq!(
            game_volume_name("rtm-1a2b3c-g1", "saves"),
            "rtm-1a2b3c-g1_saves"
        );
        assert_ne!(
            game_volume_name("rtm-1a2b3c-g1", "a-b"),
            game_volume_name("rtm-1a2b3c-g1-a", "b")
        );
    }
}
