//! image: makes a game's image ready on the Docker host before anything is stopped,
//! as `spec.imagePullPolicy` says (pull when missing, always, or never), with the
//! registry's credentials from the controller's auth file and within
//! `--image-pull-timeout`; and names the digest a new container runs (`status.imageID`,
//! carried on the container's `rtmanager.dev/image-id` label).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_core::error_code::ErrorCode;
use rtm_core::failure::Failure;
use rtm_core::model::{ImageName, ImagePullPolicy};
use rtm_core::records::events::EventReason;

use super::{Lifecycle, runtime_failure};
use crate::registry_auth::RegistryAuth;
use crate::runtime::{
    ContainerInfo, ImageInfo, LABEL_IMAGE_ID, PullFailure, RuntimeError, RuntimeOp,
};

/// The default of `--image-pull-timeout`: a game image of a few hundred MiB over a
/// slow link, and shorter than the default `--reconcile-timeout` (5m), which bounds
/// the whole operation the pull is part of.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(240);

/// How the controller pulls: the registry credentials and the bound on one pull.
#[derive(Debug, Clone)]
pub struct ImagePulls {
    /// The auth file (`--registry-auth-file`), read again when it changes.
    pub auth: Arc<RegistryAuth>,
    /// The bound on one pull or registry look-up (`--image-pull-timeout`).
    pub timeout: Duration,
}

impl Default for ImagePulls {
    fn default() -> Self {
        Self {
            auth: Arc::new(RegistryAuth::new(None)),
            timeout: DEFAULT_PULL_TIMEOUT,
        }
    }
}

/// An image on the Docker host, ready for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadyImage {
    /// Its image id (`sha256:...`).
    pub(crate) id: String,
    /// What the container runs, as `status.imageID` shows it: see [`run_digest`].
    pub(crate) digest: String,
    /// Why it runs although the pull `Always` asked for failed (a start with no
    /// running container to keep: the copy on the host serves), for the history.
    pub(crate) note: Option<String>,
}

impl Lifecycle {
    /// Makes `image` ready as `policy` says, before any step that could leave the game
    /// without a container: `Never` only checks it is there (`image_not_found`),
    /// `IfNotPresent` pulls it when it is not, `Always` pulls it every time. A failed
    /// pull fails with its own code and nothing of the game is touched. With
    /// `fallback`, an `Always` pull that fails while the image is on the host runs that
    /// copy (a crashed game is not kept down by a registry outage).
    pub(crate) async fn prepare_image(
        &self,
        game: &str,
        image: &str,
        policy: ImagePullPolicy,
        fallback: bool,
    ) -> Result<ReadyImage, Failure> {
        let pullable = ImageName::parse(image).is_some();
        let present = match policy {
            ImagePullPolicy::Always if pullable => None,
            _ => self.present(image).await?,
        };
        if let Some(info) = present {
            return Ok(ready(image, &info, None));
        }
        if policy == ImagePullPolicy::Never || !pullable {
            return Err(Failure::new(
                ErrorCode::ImageNotFound,
                format!(
                    "image {image} is not present on the Docker host and imagePullPolicy is \
                     {policy}; load or build it there, or let the controller pull it"
                ),
            ));
        }
        // With Always the image was not looked for here: it may well be present.
        let missing_here = policy != ImagePullPolicy::Always;
        match self.pull(game, image, missing_here).await {
            Ok(info) => Ok(ready(image, &info, None)),
            Err(failure) if fallback && policy == ImagePullPolicy::Always => {
                match self.present(image).await? {
                    Some(info) => {
                        let note = format!(
                            "the pull of {image} failed ({}: {}); the copy on the Docker host runs",
                            failure.code, failure.message
                        );
                        tracing::warn!(%game, %image, code = %failure.code, "{note}");
                        Ok(ready(image, &info, Some(note)))
                    }
                    None => Err(failure),
                }
            }
            Err(failure) => Err(failure),
        }
    }

    async fn present(&self, image: &str) -> Result<Option<ImageInfo>, Failure> {
        self.runtime
            .inspect_image(image)
            .await
            .map_err(|e| runtime_failure(RuntimeOp::InspectImage, &e))
    }

    /// Pulls `image` with its registry's credentials, within the pull timeout;
    /// `missing_here`: it was looked for on the Docker host and is not there. Also the
    /// pull of `rtctl prepull` (crate::prepull), so both log and record `ImagePulled` alike.
    pub(crate) async fn pull(
        &self,
        game: &str,
        image: &str,
        missing_here: bool,
    ) -> Result<ImageInfo, Failure> {
        let pulls = self.image_pulls();
        let credentials = pulls.auth.for_image(image).map_err(|e| {
            Failure::new(
                ErrorCode::ImagePullFailed,
                format!("cannot pull {image}: {e}"),
            )
        })?;
        let started = Instant::now();
        tracing::info!(%game, %image, authenticated = credentials.is_some(), "pulling the image");
        match self
            .runtime
            .pull_image(image, credentials.as_ref(), pulls.timeout)
            .await
        {
            Ok(info) => {
                let digest = run_digest(image, &info);
                let took = started.elapsed();
                tracing::info!(
                    %game,
                    %image,
                    %digest,
                    took_ms = took.as_millis() as u64,
                    "ImagePulled"
                );
                // One event per image the game was pulled to (a pull of the digest it
                // already had is the same occurrence).
                self.notice(
                    game,
                    EventReason::ImagePulled,
                    &digest,
                    format!(
                        "pulled {image} ({digest}) in {}",
                        humantime::format_duration(Duration::from_millis(took.as_millis() as u64))
                    ),
                );
                Ok(info)
            }
            Err(e @ RuntimeError::Pull { .. }) => {
                tracing::warn!(%game, %image, code = %e.code(), error = %e, "the pull failed");
                let message = match &e {
                    RuntimeError::Pull {
                        failure: PullFailure::NotFound,
                        message,
                        ..
                    } if missing_here => format!(
                        "image {image} is not present on the Docker host, and its registry \
                         does not have it: {message}"
                    ),
                    RuntimeError::Pull {
                        failure: PullFailure::NotFound,
                        message,
                        ..
                    } => format!("image {image} is not in its registry: {message}"),
                    other => other.to_string(),
                };
                Err(Failure::new(e.code(), message))
            }
            Err(e) => Err(runtime_failure(RuntimeOp::PullImage, &e)),
        }
    }
}

fn ready(image: &str, info: &ImageInfo, note: Option<String>) -> ReadyImage {
    ReadyImage {
        id: info.id.clone(),
        digest: run_digest(image, info),
        note,
    }
}

/// The digest a container of `image` runs: the image's repository digest for the
/// repository `image` names (`registry/repo@sha256:...`) when it came from there,
/// else its image id.
pub(crate) fn run_digest(image: &str, info: &ImageInfo) -> String {
    let wanted = ImageName::parse(image).map(|n| (n.registry, n.repository));
    info.repo_digests
        .iter()
        .find(|digest| {
            let repository = digest.split('@').next().unwrap_or_default();
            wanted.is_some()
                && ImageName::parse(repository).map(|n| (n.registry, n.repository)) == wanted
        })
        .cloned()
        .unwrap_or_else(|| info.id.clone())
}

/// What `status.imageID` says of `container`: the digest on its label, else its
/// image id.
pub(crate) fn status_image_id(container: &ContainerInfo) -> Option<String> {
    container
        .labels
        .get(LABEL_IMAGE_ID)
        .or(Some(&container.image_id))
        .filter(|id| !id.is_empty())
        .cloned()
}

/// The manifest digest in a `status.imageID` / label value that is a repository
/// digest of the repository `image` names; `None` for an image id or another
/// repository (then a tag's move cannot be told, and nothing is recreated for it).
pub(crate) fn digest_of(image: &str, image_id: &str) -> Option<String> {
    let (repository, digest) = image_id.split_once('@')?;
    let same = |r: &str| ImageName::parse(r).map(|n| (n.registry, n.repository));
    (same(repository).is_some() && same(repository) == same(image)).then(|| digest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_digest_is_the_repository_digest_of_the_named_repository() {
        let info = ImageInfo {
            id: "sha256:id".into(),
            repo_digests: vec![
                "127.0.0.1:5100/other@sha256:aaa".into(),
                "127.0.0.1:5100/pulls/engine@sha256:bbb".into(),
                "galaxy/engine@sha256:ccc".into(),
            ],
        };
        assert_eq!(
            run_digest("127.0.0.1:5100/pulls/engine:1", &info),
            "127.0.0.1:5100/pulls/engine@sha256:bbb"
        );
        assert_eq!(
            run_digest("docker.io/galaxy/engine:2", &info),
            "galaxy/engine@sha256:ccc"
        );
        assert_eq!(run_digest("rtmanager-test/engine:1", &info), "sha256:id");
        assert_eq!(run_digest("sha256:id", &info), "sha256:id");
    }

    #[test]
    fn only_a_repository_digest_of_the_same_repository_has_a_digest_to_follow() {
        let image = "127.0.0.1:5100/pulls/engine:1";
        assert_eq!(
            digest_of(image, "127.0.0.1:5100/pulls/engine@sha256:bbb").as_deref(),
            Some("sha256:bbb")
        );
        assert_eq!(digest_of(image, "127.0.0.1:5100/other@sha256:bbb"), None);
        assert_eq!(digest_of(image, "sha256:id"), None);
    }
}
