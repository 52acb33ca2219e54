//! Pulls and registry look-ups through Docker: `POST /images/create` (the progress
//! stream read to its end, a failure reported inside it included) and
//! `GET /distribution/<image>/json` (the manifest's digest, nothing downloaded); the
//! mapping of their failures into [`PullFailure`]s.

use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;

use rtm_core::model::ImageName;

use super::{DockerRuntime, backstop_secs, error_chain};
use crate::runtime::{ImageInfo, PullFailure, RegistryCredentials, RuntimeError};

impl DockerRuntime {
    /// [`crate::runtime::ContainerRuntime::pull_image`].
    pub(super) async fn pull(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        let (from_image, tag) = split_for_pull(image)?;
        // bollard's own timeout covers the response headers, which Docker sends
        // only once the registry answered: it must not fire before ours.
        let docker = self
            .client()
            .await?
            .with_timeout(Duration::from_secs(backstop_secs(timeout)));
        let options = CreateImageOptions {
            from_image: Some(from_image),
            tag: Some(tag),
            ..Default::default()
        };
        let mut progress = docker.create_image(Some(options), None, credentials.map(docker_auth));
        let read = async {
            while let Some(item) = progress.next().await {
                item?;
            }
            Ok::<(), DockerError>(())
        };
        // Dropping the request on the timeout closes the connection, and Docker
        // cancels the pull with it.
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(pull_error(image, err)),
            Err(_elapsed) => return Err(timed_out(image, timeout)),
        }
        match self.inspect_pulled(image).await? {
            Some(info) => Ok(info),
            None => Err(RuntimeError::Pull {
                image: image.to_owned(),
                failure: PullFailure::Failed,
                message: "Docker reported the pull done, but the image is not on the host".into(),
            }),
        }
    }

    /// [`crate::runtime::ContainerRuntime::registry_digest`].
    pub(super) async fn digest_in_registry(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<String, RuntimeError> {
        split_for_pull(image)?;
        let docker = self
            .client()
            .await?
            .with_timeout(Duration::from_secs(backstop_secs(timeout)));
        let look = docker.inspect_registry_image(image, credentials.map(docker_auth));
        match tokio::time::timeout(timeout, look).await {
            Ok(Ok(inspect)) => inspect.descriptor.digest.ok_or_else(|| RuntimeError::Pull {
                image: image.to_owned(),
                failure: PullFailure::Failed,
                message: "the registry's answer names no digest".into(),
            }),
            Ok(Err(err)) => Err(pull_error(image, err)),
            Err(_elapsed) => Err(timed_out(image, timeout)),
        }
    }

    async fn inspect_pulled(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        use crate::runtime::ContainerRuntime;
        self.inspect_image(image).await
    }
}

/// `fromImage` and `tag` of a pull: the reference without its tag or digest, and the
/// tag or digest (`latest` when it names neither; never empty, which would pull every
/// tag of the repository).
fn split_for_pull(image: &str) -> Result<(String, String), RuntimeError> {
    let refused = |message: &str| RuntimeError::Pull {
        image: image.to_owned(),
        failure: PullFailure::Failed,
        message: message.to_owned(),
    };
    let name = ImageName::parse(image)
        .ok_or_else(|| refused("an image id cannot be pulled; name a repository and a tag"))?;
    let image = image.trim();
    Ok(match (name.digest, name.tag) {
        (Some(digest), _) => {
            let repository = image.split_once('@').map_or(image, |(r, _)| r);
            // `repo:tag@digest`: the digest decides; the tag is dropped.
            let repository = match repository.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => r,
                _ => repository,
            };
            (repository.to_owned(), digest)
        }
        (None, Some(tag)) => {
            let repository = image
                .strip_suffix(&format!(":{tag}"))
                .unwrap_or(image)
                .to_owned();
            (repository, tag)
        }
        (None, None) => (image.to_owned(), "latest".to_owned()),
    })
}

fn docker_auth(credentials: &RegistryCredentials) -> DockerCredentials {
    DockerCredentials {
        username: (!credentials.username.is_empty()).then(|| credentials.username.clone()),
        password: (!credentials.password.is_empty()).then(|| credentials.password.clone()),
        serveraddress: Some(credentials.server.clone()),
        identitytoken: credentials.identity_token.clone(),
        ..Default::default()
    }
}

fn timed_out(image: &str, timeout: Duration) -> RuntimeError {
    RuntimeError::Pull {
        image: image.to_owned(),
        failure: PullFailure::Timeout,
        message: format!(
            "no complete answer from its registry within {} (--image-pull-timeout)",
            humantime::format_duration(timeout)
        ),
    }
}

/// Maps a failed pull or registry look-up.
fn pull_error(image: &str, err: DockerError) -> RuntimeError {
    let (status, message) = match err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => (Some(status_code), message),
        DockerError::DockerStreamError { error } => (None, error),
        DockerError::RequestTimeoutError => {
            return RuntimeError::Pull {
                image: image.to_owned(),
                failure: PullFailure::Timeout,
                message: "Docker did not answer in time".into(),
            };
        }
        DockerError::HyperLegacyError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::SocketNotFoundError(_) => {
            return RuntimeError::Unreachable {
                message: error_chain(&err),
            };
        }
        other => (None, error_chain(&other)),
    };
    RuntimeError::Pull {
        image: image.to_owned(),
        failure: classify_pull(status, &message),
        message,
    }
}

/// What Docker's answer to a pull means (pure: the table the unit tests pin). Docker
/// 20.10 answers 404 for "manifest unknown", 500 with the registry's "unauthorized"
/// for wrong credentials, and names missing ones "no basic auth credentials".
fn classify_pull(status: Option<u16>, message: &str) -> PullFailure {
    let lower = message.to_ascii_lowercase();
    if lower.contains("unauthorized")
        || lower.contains("no basic auth credentials")
        || lower.contains("authentication required")
        || lower.contains("denied")
        || status == Some(401)
    {
        return PullFailure::Unauthorized;
    }
    if lower.contains("manifest unknown")
        || lower.contains("name unknown")
        || (lower.contains("manifest for") && lower.contains("not found"))
        || status == Some(404)
    {
        return PullFailure::NotFound;
    }
    if lower.contains("timeout") || lower.contains("deadline exceeded") {
        return PullFailure::Timeout;
    }
    PullFailure::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_names_the_repository_and_one_tag_never_every_tag() {
        let split = |image: &str| split_for_pull(image).unwrap();
        assert_eq!(split("engine"), ("engine".into(), "latest".into()));
        assert_eq!(
            split("127.0.0.1:5100/pulls/engine:1"),
            ("127.0.0.1:5100/pulls/engine".into(), "1".into())
        );
        assert_eq!(
            split("127.0.0.1:5100/pulls/engine"),
            ("127.0.0.1:5100/pulls/engine".into(), "latest".into())
        );
        assert_eq!(
            split("registry.example/galaxy/engine:1@sha256:abc"),
            ("registry.example/galaxy/engine".into(), "sha256:abc".into())
        );
        assert!(matches!(
            split_for_pull("sha256:7c2a8cb17ff7"),
            Err(RuntimeError::Pull {
                failure: PullFailure::Failed,
                ..
            })
        ));
    }

    #[test]
    fn docker_answers_to_a_pull_map_to_their_failures() {
        let cases = [
            (
                Some(404),
                "manifest for 127.0.0.1:5100/p/engine:9 not found: manifest unknown: manifest unknown",
                PullFailure::NotFound,
            ),
            (
                Some(404),
                "manifest unknown: manifest unknown",
                PullFailure::NotFound,
            ),
            (
                Some(500),
                "unauthorized: authentication required",
                PullFailure::Unauthorized,
            ),
            (
                Some(500),
                "Head \"http://127.0.0.1:5101/v2/p/engine/manifests/1\": no basic auth credentials",
                PullFailure::Unauthorized,
            ),
            (
                Some(500),
                "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
                PullFailure::Failed,
            ),
            (
                Some(500),
                "Get \"http://127.0.0.1:5199/v2/\": dial tcp 127.0.0.1:5199: connect: connection refused",
                PullFailure::Failed,
            ),
            (None, "unexpected EOF", PullFailure::Failed),
            (
                Some(500),
                "Get \"http://127.0.0.1:5102/v2/\": net/http: request canceled (Client.Timeout exceeded while awaiting headers)",
                PullFailure::Timeout,
            ),
        ];
        for (status, message, expected) in cases {
            assert_eq!(classify_pull(status, message), expected, "{message}");
        }
    }

    #[test]
    fn a_failure_inside_the_progress_stream_counts() {
        let err = pull_error(
            "127.0.0.1:5100/p/engine:1",
            DockerError::DockerStreamError {
                error: "filesystem layer verification failed".into(),
            },
        );
        assert_eq!(
            err,
            RuntimeError::Pull {
                image: "127.0.0.1:5100/p/engine:1".into(),
                failure: PullFailure::Failed,
                message: "filesystem layer verification failed".into(),
            }
        );
    }
}
