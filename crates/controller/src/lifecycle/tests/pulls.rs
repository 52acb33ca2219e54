//! Pulls in the lifecycle, against the fake runtime's registry: a missing image is
//! pulled (IfNotPresent), always pulled (Always) or refused (Never); every pull
//! happens before anything is stopped, so a failed one leaves the running game as
//! it was; credentials come from the auth file, matched by registry host.

use super::*;
use crate::lifecycle::ImagePulls;
use crate::registry_auth::RegistryAuth;
use crate::runtime::{LABEL_IMAGE_ID, PullFailure};

const REMOTE: &str = "127.0.0.1:5100/pulls/engine:1";

fn remote(name: &str) -> GameBuilder {
    game(name).image(REMOTE)
}

#[tokio::test]
async fn a_missing_image_is_pulled_and_the_container_says_which_digest_it_runs() {
    let w = world().await;
    let digest = w.runtime.push(REMOTE, "engine one");
    w.apply(remote("g1")).await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    assert_eq!(w.runtime.count(RuntimeOp::PullImage), 1);
    let container = w.runtime.container(&name("g1")).unwrap();
    let expected = format!("127.0.0.1:5100/pulls/engine@{digest}");
    assert_eq!(container.labels.get(LABEL_IMAGE_ID), Some(&expected));
    assert_eq!(w.status("g1").await.image_id, Some(expected));
    // Present now: a restart with IfNotPresent pulls nothing.
    let restarted = w.lifecycle.restart(&request("g1")).await;
    assert!(restarted.is_success(), "{restarted:?}");
    assert_eq!(w.runtime.count(RuntimeOp::PullImage), 1);
}

#[tokio::test]
async fn never_with_a_missing_image_is_image_not_found_without_a_pull() {
    let w = world().await;
    w.runtime.push(REMOTE, "engine one");
    w.apply(remote("g1").spec_lines("  imagePullPolicy: Never\n"))
        .await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert_failed(
        &result,
        ErrorCode::ImageNotFound,
        "imagePullPolicy is Never",
    );
    assert_eq!(w.runtime.count(RuntimeOp::PullImage), 0);
    assert!(w.runtime.containers().is_empty());
}

#[tokio::test]
async fn a_tag_the_registry_does_not_have_is_image_not_found() {
    let w = world().await;
    w.apply(remote("g1")).await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert_failed(&result, ErrorCode::ImageNotFound, "manifest unknown");
    assert!(w.runtime.containers().is_empty());
}

#[tokio::test]
async fn a_failed_pull_of_a_restart_stops_nothing_whatever_its_kind() {
    let w = world().await;
    w.runtime.push(REMOTE, "engine one");
    w.apply(remote("g1").spec_lines("  imagePullPolicy: Always\n"))
        .await;
    let started = w.lifecycle.start(&request("g1")).await;
    assert!(started.is_success(), "{started:?}");
    for (failure, code) in [
        (PullFailure::Unauthorized, ErrorCode::ImagePullUnauthorized),
        (PullFailure::Timeout, ErrorCode::ImagePullTimeout),
        (PullFailure::Failed, ErrorCode::ImagePullFailed),
        (PullFailure::NotFound, ErrorCode::ImageNotFound),
    ] {
        w.runtime.fail_next_pull(failure);
        let result = w.lifecycle.restart(&request("g1")).await;
        assert_eq!(result.error_code, Some(code), "{result:?}");
        let left = w.runtime.containers();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(Some(&left[0].id), started.container_id.as_ref());
        assert!(left[0].is_running(), "{failure:?}: never stopped");
    }
    assert_eq!(w.runtime.count(RuntimeOp::Stop), 0);
}

#[tokio::test]
async fn always_pulls_once_per_restart_before_the_stop_and_never_after_it() {
    let w = world().await;
    w.runtime.push(REMOTE, "engine one");
    w.apply(remote("g1").spec_lines("  imagePullPolicy: Always\n"))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    let moved = w.runtime.push(REMOTE, "engine two");
    w.runtime.clear_calls();
    let result = w.lifecycle.restart(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    let ops: Vec<RuntimeOp> = w.runtime.calls().iter().map(|c| c.op).collect();
    let pull = ops.iter().position(|op| *op == RuntimeOp::PullImage);
    let stop = ops.iter().position(|op| *op == RuntimeOp::Stop);
    assert!(pull.is_some() && pull < stop, "{ops:?}");
    assert_eq!(w.runtime.count(RuntimeOp::PullImage), 1, "{ops:?}");
    let container = w.runtime.container(&name("g1")).unwrap();
    assert_eq!(
        container.labels.get(LABEL_IMAGE_ID),
        Some(&format!("127.0.0.1:5100/pulls/engine@{moved}"))
    );
}

#[tokio::test]
async fn a_start_with_always_runs_the_copy_on_the_host_when_the_registry_fails() {
    let w = world().await;
    w.runtime.push(REMOTE, "engine one");
    w.apply(remote("g1").spec_lines("  imagePullPolicy: Always\n"))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    let id = w.runtime.container(&name("g1")).unwrap().id;
    w.runtime.remove(&id, true).await.unwrap();
    w.runtime.fail_next_pull(PullFailure::Failed);
    let result = w.lifecycle.start(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    let entry = &w.history("g1").await[0];
    let note = entry.note.as_deref().unwrap_or_default();
    assert!(note.contains("copy on the Docker host"), "{entry:#?}");
}

#[tokio::test]
async fn credentials_come_from_the_auth_file_by_registry_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    let write = |password: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("rtm:{password}"));
        std::fs::write(
            &file,
            format!(r#"{{"auths": {{"127.0.0.1:5100": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
    };
    write("wrong-one");
    let parts = fixture::parts().await;
    let lifecycle = Lifecycle::new(parts.runtime.clone(), parts.session, 100, parts.metrics)
        .with_image_pulls(ImagePulls {
            auth: Arc::new(RegistryAuth::new(Some(file.clone()))),
            timeout: Duration::from_secs(5),
        });
    parts.runtime.push(REMOTE, "engine one");
    parts
        .runtime
        .require_credentials("127.0.0.1:5100", "rtm", "s3cret");
    parts.documents.create(&remote("g1").build()).await.unwrap();
    let refused = lifecycle.start(&request("g1")).await;
    assert_failed(&refused, ErrorCode::ImagePullUnauthorized, "unauthorized");
    assert!(
        !refused
            .error_message
            .unwrap_or_default()
            .contains("wrong-one"),
        "no password in errors"
    );
    write("s3cret");
    let pulled = lifecycle.start(&request("g1")).await;
    assert!(
        pulled.is_success(),
        "read again after the change: {pulled:?}"
    );
    std::fs::write(&file, "{not json").unwrap();
    let remove = parts.runtime.container(&name("g1")).unwrap().id;
    parts.runtime.remove(&remove, true).await.unwrap();
    parts.runtime.remove_image(REMOTE);
    let broken = lifecycle.start(&request("g1")).await;
    assert_failed(
        &broken,
        ErrorCode::ImagePullFailed,
        "is not a Docker config.json",
    );
}
