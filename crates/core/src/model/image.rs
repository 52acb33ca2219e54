//! Images: `spec.imagePullPolicy`, and what an image reference names (its registry
//! host, repository and tag or digest), as Docker reads it.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When the controller pulls `spec.image` from its registry, as Kubernetes'
/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull only when the image is not on the Docker host (the default).
    #[default]
    IfNotPresent,
    /// Pull before every container is created, and follow the tag: when its digest in
    /// the registry moves, the game is recreated (a voluntary update) to run it.
    Always,
    /// Never pull: the image must be on the Docker host (`image_not_found` otherwise).
    Never,
}

impl ImagePullPolicy {
    /// The YAML form.
    pub const fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::Never => "Never",
        }
    }

    /// True for the default (the field is then left out of the YAML).
    pub fn is_default(&self) -> bool {
        *self == ImagePullPolicy::IfNotPresent
    }
}

impl fmt::Display for ImagePullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Docker Hub's registry host, for references that name none (`engine:1`, `galaxy/engine`).
pub const DOCKER_HUB: &str = "docker.io";

/// An image reference split as Docker splits it: `[host[:port]/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// The registry host (with its port), `docker.io` when the reference names none.
    pub registry: String,
    /// The repository path inside the registry, e.g. `galaxy/engine` (`library/x` for
    /// an official Docker Hub image `x`).
    pub repository: String,
    /// The tag, `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// The digest (`sha256:...`) when the reference pins one.
    pub digest: Option<String>,
}

impl ImageName {
    /// Splits `reference`. The first path component is a registry host when it has a
    /// `.` or a `:`, or is `localhost` (Docker's rule); a reference that is an image id
    /// (`sha256:...`) has no registry and gives `None`.
    pub fn parse(reference: &str) -> Option<ImageName> {
        let reference = reference.trim();
        if reference.is_empty() || reference.starts_with("sha256:") {
            return None;
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_owned())),
            None => (reference, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path)
            }
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        // A tag is after the last ':' of the last path component (a port is not).
        let last = path.rsplit('/').next().unwrap_or(path);
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, tag)) => (
                path[..path.len() - tag.len() - 1].to_owned(),
                Some(tag.to_owned()),
            ),
            None => (path.to_owned(), None),
        };
        if repository.is_empty() {
            return None;
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Some(ImageName {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(reference: &str) -> (String, String, Option<String>, Option<String>) {
        let name = ImageName::parse(reference).unwrap();
        (name.registry, name.repository, name.tag, name.digest)
    }

    #[test]
    fn references_split_into_registry_repository_and_tag_as_docker_does() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            parts("engine"),
            (
                "docker.io".into(),
                "library/engine".into(),
                s("latest"),
                None
            )
        );
        assert_eq!(
            parts("rtmanager-test/engine:1"),
            (
                "docker.io".into(),
                "rtmanager-test/engine".into(),
                s("1"),
                None
            )
        );
        assert_eq!(
            parts("127.0.0.1:5000/pulls/engine:2"),
            ("127.0.0.1:5000".into(), "pulls/engine".into(), s("2"), None)
        );
        assert_eq!(
            parts("localhost/engine"),
            ("localhost".into(), "engine".into(), s("latest"), None)
        );
        assert_eq!(
            parts("registry.example/galaxy/engine@sha256:abc"),
            (
                "registry.example".into(),
                "galaxy/engine".into(),
                None,
                s("sha256:abc")
            )
        );
        assert_eq!(ImageName::parse("sha256:7c2a8cb17ff7"), None);
        assert_eq!(ImageName::parse(""), None);
    }
}
