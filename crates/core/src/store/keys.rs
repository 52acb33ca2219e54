//! The etcd key layout, in one place, under a configurable prefix:
//!
//! ```text
//! <prefix>/gameruntimes/<name>        desired state (rtctl, any client)
//! <prefix>/status/<name>              status (controller)
//! <prefix>/history/<name>/<seq>       operation entries (controller)
//! <prefix>/leases/<name>              per-game lease (controller)
//! <prefix>/controllers/<id>           controller heartbeat (controller)
//! <prefix>/sessions/<name>            the game's session, Idle or Allocated (matchmakers, rtctl)
//! <prefix>/budgets/<name>             GameDisruptionBudget documents (rtctl, any client)
//! <prefix>/budget-slots/<budget>/<i>  a slot of a budget held by one game (controller)
//! <prefix>/revisions/<name>/<gen>     the last few applied specs of a game (rtctl)
//! <prefix>/prepulls/<id>              a prepull request (rtctl), on the requester's lease
//! <prefix>/prepulls/<id>/nodes/<node> a node's answer to it (controller), on the same lease
//! <prefix>/nodes/<node>               a node's registration (its controller; the scheduler marks it lost)
//! <prefix>/cordons/<node>             a cordon or drain of a node (rtctl)
//! <prefix>/assignments/<name>         the node a game runs on (the scheduler, by CAS; a node adopting or releasing)
//! <prefix>/scheduler                  the elected scheduler, on its session's lease (controller)
//! ```
//!
//! The roles `scripts/etcd-roles` creates grant permissions on these
//! prefixes (README, Security): a new key kind needs its role permissions.
//!
//! Names reach this module only after validation (DNS-1123 labels), so a
//! name can never add a path segment; [`Keys::name_of`] still refuses
//! anything that does not look like one when decoding keys read back.

/// The default key prefix (`RTM_PREFIX`).
pub const DEFAULT_PREFIX: &str = "/rtmanager";

/// Width of a history sequence number: zero-padded so that etcd's byte
/// order is numeric order (u64::MAX has 20 digits).
const SEQ_WIDTH: usize = 20;

/// Builds and decodes the keys of one rtmanager installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key prefix {prefix:?}: {reason}")]
pub struct PrefixError {
    /// The prefix as given.
    pub prefix: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Keys {
    /// Normalises `prefix` to `/a/b` (leading slash, no trailing slash).
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let trimmed = prefix.trim_end_matches('/');
        let error = |reason| PrefixError {
            prefix: prefix.to_owned(),
            reason,
        };
        if trimmed.is_empty() {
            return Err(error(
                "must name at least one path segment, e.g. /rtmanager",
            ));
        }
        if !trimmed.starts_with('/') {
            return Err(error("must start with '/'"));
        }
        if trimmed
            .split('/')
            .skip(1)
            .any(|segment| segment.is_empty() || segment == "..")
        {
            return Err(error("must not contain empty or '..' segments"));
        }
        if !trimmed.chars().all(|c| c.is_ascii_graphic()) {
            return Err(error("must be printable ASCII without spaces"));
        }
        Ok(Self {
            prefix: trimmed.to_owned(),
        })
    }

    /// The normalised prefix, `/a/b`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything rtmanager owns (tests wipe it).
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Every game's document: `gameruntimes/`.
    pub fn gameruntimes(&self) -> String {
        format!("{}/gameruntimes/", self.prefix)
    }

    /// One game's document: `gameruntimes/<name>`.
    pub fn gameruntime(&self, name: &str) -> String {
        format!("{}{name}", self.gameruntimes())
    }

    /// Every game's status record: `status/`.
    pub fn statuses(&self) -> String {
        format!("{}/status/", self.prefix)
    }

    /// One game's status record: `status/<name>`.
    pub fn status(&self, name: &str) -> String {
        format!("{}{name}", self.statuses())
    }

    /// All history of one game; the trailing slash keeps `g1` from matching
    /// `g10`.
    pub fn history(&self, name: &str) -> String {
        format!("{}/history/{name}/", self.prefix)
    }

    /// Every game's history.
    pub fn histories(&self) -> String {
        format!("{}/history/", self.prefix)
    }

    /// Every node's registration: `nodes/`.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// One node's registration: `nodes/<node>`.
    pub fn node(&self, node: &str) -> String {
        format!("{}{node}", self.nodes())
    }

    /// Every cordon: `cordons/`.
    pub fn cordons(&self) -> String {
        format!("{}/cordons/", self.prefix)
    }

    /// One node's cordon: `cordons/<node>`.
    pub fn cordon(&self, node: &str) -> String {
        format!("{}{node}", self.cordons())
    }

    /// Every game's assignment: `assignments/`.
    pub fn assignments(&self) -> String {
        format!("{}/assignments/", self.prefix)
    }

    /// One game's assignment: `assignments/<name>`.
    pub fn assignment(&self, name: &str) -> String {
        format!("{}{name}", self.assignments())
    }

    /// The elected scheduler: `scheduler`.
    pub fn scheduler(&self) -> String {
        format!("{}/scheduler", self.prefix)
    }

    /// The game whose history holds `key` (`history/<name>/...`), or
    /// `None` for a key that is not under a plausible name.
    pub fn history_game<'k>(&self, key: &'k str) -> Option<&'k str> {
        let collection = self.histories();
        let (name, _) = key.strip_prefix(&collection)?.split_once('/')?;
        self.name_of(&collection, &key[..collection.len() + name.len()])
    }

    /// One history entry: `history/<name>/<seq>`, the sequence number zero-padded so
    /// that key order is entry order.
    pub fn history_entry(&self, name: &str, seq: u64) -> String {
        format!("{}{seq:0width$}", self.history(name), width = SEQ_WIDTH)
    }

    /// Every game's events: `events/`.
    pub fn events(&self) -> String {
        format!("{}/events/", self.prefix)
    }

    /// One game's events; the trailing slash keeps `g1` from matching `g10`.
    pub fn game_events(&self, name: &str) -> String {
        format!("{}{name}/", self.events())
    }

    /// One event of a game: `events/<name>/<reason>` (repeats fold into it).
    pub fn event(&self, name: &str, reason: crate::records::events::EventReason) -> String {
        format!("{}{}", self.game_events(name), reason.as_str())
    }

    /// Every game's kept last output: `previous/`.
    pub fn previouses(&self) -> String {
        format!("{}/previous/", self.prefix)
    }

    /// The last output and exit of one game's previous container, kept when the
    /// controller replaced or removed it after it exited or failed its health check:
    /// `previous/<name>`.
    pub fn previous(&self, name: &str) -> String {
        format!("{}{name}", self.previouses())
    }

    /// Every game's operation lease: `leases/`.
    pub fn leases(&self) -> String {
        format!("{}/leases/", self.prefix)
    }

    /// One game's operation lease: `leases/<name>`.
    pub fn lease(&self, name: &str) -> String {
        format!("{}{name}", self.leases())
    }

    /// Every host-port claim of one node: `ports/<node>/`.
    pub fn ports(&self, node: &str) -> String {
        format!("{}/ports/{node}/", self.prefix)
    }

    /// The claim of one host port on one node:
    /// `ports/<node>/<protocol>/<port>` (see `crate::ports`).
    pub fn port(&self, node: &str, protocol: &str, port: u16) -> String {
        format!("{}/ports/{node}/{protocol}/{port}", self.prefix)
    }

    /// Every controller's heartbeat: `controllers/`.
    pub fn controllers(&self) -> String {
        format!("{}/controllers/", self.prefix)
    }

    /// One controller's heartbeat: `controllers/<id>`.
    pub fn controller(&self, id: &str) -> String {
        format!("{}{id}", self.controllers())
    }

    /// Every game's session record: `sessions/`.
    pub fn sessions(&self) -> String {
        format!("{}/sessions/", self.prefix)
    }

    /// One game's session record: `sessions/<name>`.
    pub fn session(&self, name: &str) -> String {
        format!("{}{name}", self.sessions())
    }

    /// Every disruption budget document: `budgets/`.
    pub fn budgets(&self) -> String {
        format!("{}/budgets/", self.prefix)
    }

    /// One disruption budget document: `budgets/<name>`.
    pub fn budget(&self, name: &str) -> String {
        format!("{}{name}", self.budgets())
    }

    /// Every slot of every budget: `budget-slots/`.
    pub fn all_budget_slots(&self) -> String {
        format!("{}/budget-slots/", self.prefix)
    }

    /// Every slot of one budget: `budget-slots/<budget>/`.
    pub fn budget_slots(&self, budget: &str) -> String {
        format!("{}{budget}/", self.all_budget_slots())
    }

    /// One slot of a budget: `budget-slots/<budget>/<index>`.
    pub fn budget_slot(&self, budget: &str, index: usize) -> String {
        format!("{}{index}", self.budget_slots(budget))
    }

    /// The budget and slot index of a slot key, or `None` for a key that is not one.
    pub fn slot_of<'k>(&self, key: &'k str) -> Option<(&'k str, usize)> {
        let collection = self.all_budget_slots();
        let (budget, index) = key.strip_prefix(&collection)?.split_once('/')?;
        self.name_of(&collection, &key[..collection.len() + budget.len()])?;
        let index = index.parse().ok().filter(|_| !index.starts_with('+'))?;
        Some((budget, index))
    }

    /// Every applied spec kept of one game: `revisions/<name>/`.
    pub fn revisions(&self, name: &str) -> String {
        format!("{}/revisions/{name}/", self.prefix)
    }

    /// Every game's kept specs: `revisions/`.
    pub fn all_revisions(&self) -> String {
        format!("{}/revisions/", self.prefix)
    }

    /// The spec of one generation of a game: `revisions/<name>/<generation>`, zero-padded so
    /// that key order is generation order.
    pub fn revision(&self, name: &str, generation: i64) -> String {
        format!(
            "{}{generation:0width$}",
            self.revisions(name),
            width = SEQ_WIDTH
        )
    }

    /// Every prepull request and its nodes' answers: `prepulls/`.
    pub fn prepulls(&self) -> String {
        format!("{}/prepulls/", self.prefix)
    }

    /// One prepull request (`rtctl prepull`): `prepulls/<id>`.
    pub fn prepull(&self, id: &str) -> String {
        format!("{}{id}", self.prepulls())
    }

    /// Every node's answer to one prepull request: `prepulls/<id>/nodes/`.
    pub fn prepull_answers(&self, id: &str) -> String {
        format!("{}{id}/nodes/", self.prepulls())
    }

    /// One node's answer to a prepull request: `prepulls/<id>/nodes/<node>`.
    pub fn prepull_answer(&self, id: &str, node: &str) -> String {
        format!("{}{node}", self.prepull_answers(id))
    }

    /// The name in a key read back from under `collection` (one of the
    /// prefixes above), or `None` for a key that is not a direct child
    /// holding a plausible name (written by hand, or by a future version).
    pub fn name_of<'k>(&self, collection: &str, key: &'k str) -> Option<&'k str> {
        let name = key.strip_prefix(collection)?;
        let plausible = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        plausible.then_some(name)
    }

    /// The sequence number of a history key of `name`.
    pub fn history_seq(&self, name: &str, key: &str) -> Option<u64> {
        key.strip_prefix(&self.history(name))?.parse().ok()
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_design() {
        let keys = Keys::default();
        assert_eq!(keys.gameruntime("g1"), "/rtmanager/gameruntimes/g1");
        assert_eq!(keys.status("g1"), "/rtmanager/status/g1");
        assert_eq!(keys.lease("g1"), "/rtmanager/leases/g1");
        assert_eq!(keys.previous("g1"), "/rtmanager/previous/g1");
        assert_eq!(
            keys.event("g1", crate::records::events::EventReason::BackOff),
            "/rtmanager/events/g1/BackOff"
        );
        assert_eq!(
            keys.controller("node-a-1"),
            "/rtmanager/controllers/node-a-1"
        );
        assert_eq!(
            keys.history_entry("g1", 7),
            "/rtmanager/history/g1/00000000000000000007"
        );
    }

    #[test]
    fn session_budget_and_revision_keys_follow_the_layout() {
        let keys = Keys::default();
        assert_eq!(keys.session("g1"), "/rtmanager/sessions/g1");
        assert_eq!(keys.budget("casual"), "/rtmanager/budgets/casual");
        assert_eq!(
            keys.budget_slot("casual", 3),
            "/rtmanager/budget-slots/casual/3"
        );
        assert_eq!(
            keys.slot_of(&keys.budget_slot("casual", 3)),
            Some(("casual", 3))
        );
        for odd in [
            "/rtmanager/budget-slots/casual",
            "/rtmanager/budget-slots/casual/x",
            "/rtmanager/budget-slots/Bad/1",
            "/rtmanager/budget-slots/casual/+1",
        ] {
            assert_eq!(keys.slot_of(odd), None, "{odd}");
        }
        assert!(!keys.budget_slots("a").starts_with(&keys.budgets()));
        assert_eq!(
            keys.revision("g1", 12),
            "/rtmanager/revisions/g1/00000000000000000012"
        );
        assert!(keys.revision("g1", 9) < keys.revision("g1", 10));
    }

    #[test]
    fn prefix_is_normalised_and_checked() {
        assert_eq!(Keys::new("/a/b/").unwrap().prefix(), "/a/b");
        for bad in ["", "/", "rel", "/a//b", "/a/../b", "/a b"] {
            assert!(Keys::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn history_keys_sort_numerically_and_decode() {
        let keys = Keys::default();
        let (nine, ten) = (keys.history_entry("g", 9), keys.history_entry("g", 10));
        assert!(nine < ten, "byte order must be numeric order");
        assert_eq!(keys.history_seq("g", &ten), Some(10));
        assert_eq!(keys.history_seq("g1", &keys.history_entry("g10", 1)), None);
    }

    #[test]
    fn history_game_names_the_game_of_a_history_key() {
        let keys = Keys::default();
        assert_eq!(keys.histories(), "/rtmanager/history/");
        assert_eq!(
            keys.history_game(&keys.history_entry("g-1", 3)),
            Some("g-1")
        );
        assert!(keys.history("g1").starts_with(&keys.histories()));
        for odd in [
            "/rtmanager/history/g1",
            "/rtmanager/history//1",
            "/rtmanager/history/Bad/1",
            "/rtmanager/status/g1/1",
        ] {
            assert_eq!(keys.history_game(odd), None, "{odd}");
        }
    }

    #[test]
    fn name_of_refuses_keys_that_are_not_plain_names() {
        let keys = Keys::default();
        let collection = keys.gameruntimes();
        assert_eq!(
            keys.name_of(&collection, &keys.gameruntime("g-1")),
            Some("g-1")
        );
        assert_eq!(
            keys.name_of(&collection, "/rtmanager/gameruntimes/a/b"),
            None
        );
        assert_eq!(keys.name_of(&collection, "/rtmanager/gameruntimes/"), None);
        assert_eq!(keys.name_of(&collection, "/rtmanager/status/g"), None);
    }
}
