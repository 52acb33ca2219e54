//! The tag watch of `imagePullPolicy: Always`: what digest each such game's tag has in
//! its registry, asked through Docker's distribution inspect (the manifest only, no
//! pull) at most once per `--image-check-interval` per image (a fleet on one tag costs
//! one look), each look bounded by `--image-pull-timeout`. The plan compares the answer with the digest on the
//! container's label; this module only remembers answers, in memory (losing them
//! costs one look, never a recreate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::lifecycle::ImagePulls;
use crate::runtime::ContainerRuntime;

/// The default of `--image-check-interval`: a tag moved is followed within it (and a
/// resync), while a thousand games ask their registry about once a second at most.
pub(crate) const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Remembers the last look at each image's tag.
#[derive(Debug)]
pub(crate) struct ImageWatch {
    runtime: Arc<dyn ContainerRuntime>,
    pulls: ImagePulls,
    interval: Duration,
    /// By image reference.
    looks: Mutex<HashMap<String, Look>>,
}

#[derive(Debug, Clone)]
struct Look {
    at: Instant,
    /// The digest, or `None` when the look failed (logged once per failure).
    digest: Option<String>,
    failure: Option<String>,
}

impl ImageWatch {
    /// Looks through `runtime` with `pulls`' credentials, at most every `interval`.
    pub(crate) fn new(
        runtime: Arc<dyn ContainerRuntime>,
        pulls: ImagePulls,
        interval: Duration,
    ) -> Self {
        Self {
            runtime,
            pulls,
            interval,
            looks: Mutex::new(HashMap::new()),
        }
    }

    /// The digest `image` has in its registry (asked for `game`): remembered when the
    /// last look at it is younger than the interval, else asked now. `None` when the
    /// registry cannot say (unreachable, refused): nothing follows then.
    pub(crate) async fn digest(&self, game: &str, image: &str) -> Option<String> {
        let now = Instant::now();
        let last = self.lock().get(image).cloned();
        if let Some(look) = &last
            && now.duration_since(look.at) < self.interval
        {
            return look.digest.clone();
        }
        let answer = match self.pulls.auth.for_image(image) {
            Ok(credentials) => self
                .runtime
                .registry_digest(image, credentials.as_ref(), self.pulls.timeout)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (digest, failure) = match answer {
            Ok(digest) => (Some(digest), None),
            Err(failure) => {
                if last.as_ref().and_then(|l| l.failure.as_ref()) != Some(&failure) {
                    tracing::warn!(%game, %image, error = %failure,
                        "cannot read the tag's digest in its registry; the game keeps its image");
                }
                (None, Some(failure))
            }
        };
        let mut looks = self.lock();
        // Images no game looked at for a while (their games changed image or left)
        // are forgotten, so the map stays as small as the images in use.
        let stale = self.interval.saturating_mul(4).max(Duration::from_secs(60));
        looks.retain(|_, look| now.duration_since(look.at) < stale);
        looks.insert(
            image.to_owned(),
            Look {
                at: now,
                digest: digest.clone(),
                failure,
            },
        );
        digest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Look>> {
        self.looks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{FakeOp, FakeRuntime};

    #[tokio::test(start_paused = true)]
    async fn a_tag_is_asked_at_most_once_per_interval_whatever_the_number_of_games() {
        let fake = FakeRuntime::new();
        let digest = fake.push("r.example/e:1", "one");
        let watch = ImageWatch::new(
            Arc::new(fake.clone()),
            ImagePulls::default(),
            Duration::from_secs(60),
        );
        assert_eq!(watch.digest("g1", "r.example/e:1").await, Some(digest));
        let moved = fake.push("r.example/e:1", "two");
        assert_ne!(
            watch.digest("g1", "r.example/e:1").await,
            Some(moved.clone())
        );
        assert_ne!(
            watch.digest("g2", "r.example/e:1").await,
            Some(moved.clone())
        );
        assert_eq!(fake.count(FakeOp::RegistryDigest), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(watch.digest("g1", "r.example/e:1").await, Some(moved));
        assert_eq!(watch.digest("g1", "r.example/e:2").await, None);
        assert_eq!(fake.count(FakeOp::RegistryDigest), 3);
    }
}
