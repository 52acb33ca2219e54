//! The image part of the decision, with no I/O: whether an `imagePullPolicy: Always`
//! game's tag moved in its registry away from the digest its container was created
//! for (a voluntary update).

use rtm_core::model::{GameRuntime, ImagePullPolicy};

use super::Observed;
use crate::lifecycle::image::digest_of;
use crate::runtime::LABEL_IMAGE_ID;

/// Whether the game follows its tag and the tag now names another digest than the
/// one its container runs. Only the container's label says what it runs: without
/// it (a container older than the label, or one made from an image id) nothing is
/// recreated, and neither without an answer from the registry.
pub(crate) fn moved(doc: &GameRuntime, observed: &Observed) -> bool {
    if doc.spec.image_pull_policy != ImagePullPolicy::Always {
        return false;
    }
    let (Some(found), Some(container)) = (&observed.registry_digest, &observed.container) else {
        return false;
    };
    container
        .labels
        .get(LABEL_IMAGE_ID)
        .and_then(|id| digest_of(&doc.spec.image, id))
        .is_some_and(|running| &running != found)
}
