//! `DockerRuntime::pull_image` and `registry_digest` against the real Docker engine and
//! the real loopback registries `scripts/services` starts: what Docker 20.10 answers
//! for each way a pull can go, mapped to the failure kinds the error codes follow.

use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerRuntime, PullFailure, RegistryCredentials, RuntimeError};

use rtm_testkit::docker::{IMAGE_1, IMAGE_2, docker};
use rtm_testkit::registry::{Pushed, docker_ok, env};

const TIMEOUT: Duration = Duration::from_secs(30);

fn pull_failure(result: Result<impl std::fmt::Debug, RuntimeError>) -> (PullFailure, String) {
    match result {
        Err(RuntimeError::Pull {
            failure, message, ..
        }) => (failure, message),
        other => panic!("expected a pull failure, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs Docker and the registries: run scripts/test"]
async fn a_pull_brings_the_image_with_its_repository_digest_and_a_moved_tag_is_seen_without_pulling()
 {
    let docker = docker().await;
    let repo = format!(
        "{}/docker-pull-{}/engine",
        env("RTM_REGISTRY"),
        std::process::id()
    );
    let image = format!("{repo}:1");
    let mut forget = Pushed::new();
    forget.forget(&image);
    docker_ok(&["tag", IMAGE_1, &image]);
    docker_ok(&["push", &image]);
    docker_ok(&["rmi", &image]);

    let pulled = docker.pull_image(&image, None, TIMEOUT).await.unwrap();
    let local = docker.inspect_image(IMAGE_1).await.unwrap().unwrap();
    assert_eq!(pulled.id, local.id);
    let digest = docker.registry_digest(&image, None, TIMEOUT).await.unwrap();
    assert!(
        pulled.repo_digests.contains(&format!("{repo}@{digest}")),
        "{pulled:?} has {digest}"
    );

    // :2's content under the same tag: the registry's digest moves; the host's
    // image does not (nothing was pulled).
    docker_ok(&["tag", IMAGE_2, &image]);
    docker_ok(&["push", &image]);
    docker_ok(&["tag", IMAGE_1, &image]);
    let moved = docker.registry_digest(&image, None, TIMEOUT).await.unwrap();
    assert_ne!(moved, digest);
    let here = docker.inspect_image(&image).await.unwrap().unwrap();
    assert_eq!(here.id, local.id, "a look at the registry pulls nothing");
}

#[tokio::test]
#[ignore = "needs Docker and the registries: run scripts/test"]
async fn each_way_a_pull_fails_has_its_kind() {
    let docker = docker().await;
    let open = env("RTM_REGISTRY");
    let auth = env("RTM_REGISTRY_AUTH");
    let tag = format!("docker-pull-{}/absent:404", std::process::id());

    let (failure, message) = pull_failure(
        docker
            .pull_image(&format!("{open}/{tag}"), None, TIMEOUT)
            .await,
    );
    assert_eq!(failure, PullFailure::NotFound, "{message}");
    let (failure, _) = pull_failure(
        docker
            .registry_digest(&format!("{open}/{tag}"), None, TIMEOUT)
            .await,
    );
    assert_eq!(failure, PullFailure::NotFound);

    let wrong = RegistryCredentials {
        server: auth.clone(),
        username: env("RTM_REGISTRY_USER"),
        password: "not-the-password".into(),
        identity_token: None,
    };
    for credentials in [None, Some(&wrong)] {
        let (failure, message) = pull_failure(
            docker
                .pull_image(&format!("{auth}/{tag}"), credentials, TIMEOUT)
                .await,
        );
        assert_eq!(failure, PullFailure::Unauthorized, "{message}");
        assert!(!message.contains("not-the-password"), "{message}");
        let (failure, _) = pull_failure(
            docker
                .registry_digest(&format!("{auth}/{tag}"), credentials, TIMEOUT)
                .await,
        );
        assert_eq!(failure, PullFailure::Unauthorized);
    }

    // Nothing listens there: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let (failure, message) = pull_failure(
        docker
            .pull_image(&format!("127.0.0.1:{port}/{tag}"), None, TIMEOUT)
            .await,
    );
    assert_eq!(failure, PullFailure::Failed, "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // An image id names no registry.
    let (failure, _) = pull_failure(docker.pull_image("sha256:0123", None, TIMEOUT).await);
    assert_eq!(failure, PullFailure::Failed);
}
