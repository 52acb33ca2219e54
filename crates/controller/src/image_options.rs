//! The controller's image options (`--registry-auth-file`, `--image-pull-timeout`,
//! `--image-check-interval`) and the [`ImagePulls`] they make.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rtm_core::config::ConfigError;

use crate::lifecycle::ImagePulls;
use crate::registry_auth::RegistryAuth;

/// How images are pulled and their tags followed.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ImageArgs {
    /// Registry credentials: a Docker config.json ({"auths": {"<host>": {"auth":
    /// base64(user:password)}}}), matched by the image's registry host and read again
    /// when it changes. Anonymous pulls without it.
    #[arg(long = "registry-auth-file", env = "RTM_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,

    /// Bound on one image pull (or registry look-up); shorter than --reconcile-timeout.
    #[arg(long = "image-pull-timeout", env = "RTM_IMAGE_PULL_TIMEOUT", default_value = "4m", value_parser = humantime::parse_duration)]
    pub image_pull_timeout: Duration,

    /// How often the tag of an imagePullPolicy Always game is looked up in its registry
    /// (the manifest only; a moved tag recreates the game as a voluntary update).
    #[arg(long = "image-check-interval", env = "RTM_IMAGE_CHECK_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub image_check_interval: Duration,
}

impl ImageArgs {
    /// Checks the ranges clap cannot; the whole operation (`reconcile_timeout`) must
    /// outlast a pull.
    pub fn validate(&self, reconcile_timeout: Duration) -> Result<(), ConfigError> {
        if self.image_pull_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Incomplete(
                "--image-pull-timeout must be at least 1s",
            ));
        }
        if self.image_pull_timeout >= reconcile_timeout {
            return Err(ConfigError::Incomplete(
                "--image-pull-timeout must be shorter than --reconcile-timeout",
            ));
        }
        if self.image_check_interval < Duration::from_secs(1) {
            return Err(ConfigError::Incomplete(
                "--image-check-interval must be at least 1s",
            ));
        }
        Ok(())
    }

    /// The pulls these options make: one auth file reader shared by the pulls and the
    /// tag watch.
    pub fn pulls(&self) -> ImagePulls {
        ImagePulls {
            auth: Arc::new(RegistryAuth::new(self.registry_auth_file.clone())),
            timeout: self.image_pull_timeout,
        }
    }
}

impl fmt::Display for ImageArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .registry_auth_file
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p| p.display().to_string());
        writeln!(f, "registry-auth-file: {file}")?;
        writeln!(
            f,
            "image-pull-timeout: {}",
            humantime::format_duration(self.image_pull_timeout)
        )?;
        writeln!(
            f,
            "image-check-interval: {}",
            humantime::format_duration(self.image_check_interval)
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ControllerConfig;
    use crate::image_watch::DEFAULT_CHECK_INTERVAL;
    use crate::lifecycle::image::DEFAULT_PULL_TIMEOUT;

    #[test]
    fn the_flags_defaults_are_the_documented_constants_and_a_pull_fits_an_operation() {
        let config = ControllerConfig::load(["rtmanager"]).unwrap();
        assert_eq!(config.images.image_pull_timeout, DEFAULT_PULL_TIMEOUT);
        assert_eq!(config.images.image_check_interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(config.images.registry_auth_file, None);
        let too_long =
            ControllerConfig::load(["rtmanager", "--image-pull-timeout", "5m"]).unwrap_err();
        assert!(
            too_long.to_string().contains("--image-pull-timeout"),
            "{too_long}"
        );
    }
}
