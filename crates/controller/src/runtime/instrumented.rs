//! A [`ContainerRuntime`] decorator that times every Docker call into the
//! `rtmanager_docker_request_duration_seconds` histogram, so the
//! implementations stay free of metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec, ExecOutcome, HostResources,
    ImageInfo, RegistryCredentials, RuntimeError, RuntimeOp, VolumeInfo, VolumeSpec,
};
use crate::metrics::Metrics;

/// Times the calls of the runtime it wraps.
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn ContainerRuntime>,
    metrics: Metrics,
}

impl Instrumented {
    /// Wraps `inner`; every call is observed in `metrics`, labelled by
    /// operation and by outcome (`ok`, `error`).
    pub fn new(inner: Arc<dyn ContainerRuntime>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: RuntimeOp,
        call: impl Future<Output = Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        let started = Instant::now();
        let result = call.await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .docker_requests
            .with_label_values(&[op.as_str(), label])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl ContainerRuntime for Instrumented {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Ping, self.inner.ping()).await
    }

    async fn host_resources(&self) -> Result<Option<HostResources>, RuntimeError> {
        // Cached by the runtimes after the first answer: not worth a metric.
        self.inner.host_resources().await
    }

    async fn engine_id(&self) -> Result<Option<String>, RuntimeError> {
        // Asked once per session.
        self.inner.engine_id().await
    }

    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.timed(RuntimeOp::InspectImage, self.inner.inspect_image(image))
            .await
    }

    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        self.timed(
            RuntimeOp::PullImage,
            self.inner.pull_image(image, credentials, timeout),
        )
        .await
    }

    async fn registry_digest(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<String, RuntimeError> {
        self.timed(
            RuntimeOp::RegistryDigest,
            self.inner.registry_digest(image, credentials, timeout),
        )
        .await
    }

    async fn inspect_container(
        &self,
        name_or_id: &str,
    ) -> Result<Option<ContainerInfo>, RuntimeError> {
        self.timed(
            RuntimeOp::InspectContainer,
            self.inner.inspect_container(name_or_id),
        )
        .await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.timed(RuntimeOp::Create, self.inner.create(spec)).await
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Start, self.inner.start(id)).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Stop, self.inner.stop(id, timeout))
            .await
    }

    async fn stop_with_signal(
        &self,
        id: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.timed(
            RuntimeOp::Stop,
            self.inner.stop_with_signal(id, signal, timeout),
        )
        .await
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Kill, self.inner.kill(id)).await
    }

    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Remove, self.inner.remove(id, force))
            .await
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Unpause, self.inner.unpause(id)).await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Rename, self.inner.rename(id, name))
            .await
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.timed(RuntimeOp::ListManaged, self.inner.list_managed())
            .await
    }

    async fn list_game(&self, game: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.timed(RuntimeOp::ListManaged, self.inner.list_game(game))
            .await
    }

    async fn list_labelled(&self, key: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.timed(RuntimeOp::ListManaged, self.inner.list_labelled(key))
            .await
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.timed(RuntimeOp::Exec, self.inner.exec(id, command, timeout))
            .await
    }

    async fn last_output(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError> {
        self.timed(RuntimeOp::Logs, self.inner.last_output(id, max_bytes))
            .await
    }

    async fn exec_running(&self, exec_id: &str) -> Result<bool, RuntimeError> {
        self.timed(RuntimeOp::Exec, self.inner.exec_running(exec_id))
            .await
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>, RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.inspect_volume(name))
            .await
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.create_volume(spec))
            .await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.remove_volume(name))
            .await
    }

    async fn list_volumes(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<VolumeInfo>, RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.list_volumes(labels))
            .await
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        self.inner.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::FakeRuntime;

    #[tokio::test]
    async fn every_call_is_timed_by_call_and_result() {
        let metrics = Metrics::new();
        let runtime = Instrumented::new(Arc::new(FakeRuntime::new()), metrics.clone());
        runtime.ping().await.unwrap();
        runtime.inspect_container("missing").await.unwrap();
        assert!(runtime.remove("missing", true).await.is_err());
        let text = metrics.render();
        for line in [
            r#"rtmanager_docker_request_duration_seconds_count{call="ping",result="ok"} 1"#,
            r#"rtmanager_docker_request_duration_seconds_count{call="inspect_container",result="ok"} 1"#,
            r#"rtmanager_docker_request_duration_seconds_count{call="remove",result="error"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
