//! The loopback registries `scripts/services` starts (Debian's docker-registry: one
//! anonymous at `RTM_REGISTRY`, one with htpasswd at `RTM_REGISTRY_AUTH`, user and password
//! in `RTM_REGISTRY_USER` / `RTM_REGISTRY_PASSWORD`), and the tags a test pushes there.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::docker::docker_cli;

/// A registry setting of `scripts/services`; a missing one fails the test saying how to
/// start them.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run eval \"$(scripts/services)\" first (it starts the registries)"
        )
    })
}

/// `docker ARGS`, which must succeed.
pub fn docker_ok(args: &[&str]) -> Output {
    let out = docker_cli(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Tags a test pushed (or pulled): untagged from this Docker host when dropped, with the
/// `repo@digest` names a pull leaves (the registry keeps them, under a repository no other
/// test uses; the images themselves are the test images and keep their own tags).
#[derive(Debug, Default)]
pub struct Pushed {
    tags: Vec<String>,
    /// The Docker CLI config of a `docker login` to the authenticating registry.
    config: Option<PathBuf>,
}

impl Pushed {
    /// Nothing pushed yet.
    pub fn new() -> Pushed {
        Pushed::default()
    }

    /// Logs in to the authenticating registry with a Docker CLI config in `dir` (never the
    /// user's ~/.docker); later pushes use it.
    pub fn login(&mut self, dir: &Path) {
        let config = dir.join("docker-cli");
        let registry = env("RTM_REGISTRY_AUTH");
        let config_arg = config.display().to_string();
        let password = env("RTM_REGISTRY_PASSWORD");
        let out = std::process::Command::new("docker")
            .args([
                "--config",
                &config_arg,
                "login",
                "-u",
                &env("RTM_REGISTRY_USER"),
            ])
            .args(["--password-stdin", &registry])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("piped stdin")
                    .write_all(password.as_bytes())?;
                child.wait_with_output()
            })
            .expect("docker login runs");
        assert!(
            out.status.success(),
            "docker login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.config = Some(config);
    }

    /// Pushes `source`'s content as `target`; returns the manifest digest.
    pub fn push(&mut self, source: &str, target: &str) -> String {
        docker_ok(&["tag", source, target]);
        self.forget(target);
        let config = self.config.as_ref().map(|c| c.display().to_string());
        let mut args = Vec::new();
        if let Some(config) = &config {
            args.extend(["--config", config.as_str()]);
        }
        args.extend(["push", target]);
        let out = docker_ok(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in docker push's output: {text}"))
            .to_owned()
    }

    /// Untags `tag` from this host when dropped (one a test pulled, say).
    pub fn forget(&mut self, tag: &str) {
        if !self.tags.iter().any(|t| t == tag) {
            self.tags.push(tag.to_owned());
        }
    }

    /// Removes `tag` from this Docker host now (the registry keeps it).
    pub fn untag_here(&self, tag: &str) {
        docker_ok(&["rmi", tag]);
    }
}

impl Drop for Pushed {
    fn drop(&mut self) {
        for tag in &self.tags {
            let _ = docker_cli(&["rmi", tag]);
            let repository = tag.rsplit_once(':').map_or(tag.as_str(), |(r, _)| r);
            let listed = docker_cli(&[
                "images",
                "--digests",
                "--format",
                "{{.Repository}}@{{.Digest}}",
                repository,
            ]);
            for name in String::from_utf8_lossy(&listed.stdout).lines() {
                if name.starts_with(repository) && !name.ends_with("@<none>") {
                    let _ = docker_cli(&["rmi", name]);
                }
            }
        }
    }
}
