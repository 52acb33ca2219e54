//! Registry credentials: the controller's auth file (`--registry-auth-file`), a
//! Docker `config.json` (`{"auths": {"<host>": {"auth": base64(user:password)}}}`, or
//! `username`/`password`, or `identitytoken`), matched by an image's registry host,
//! read again whenever the file changes. The secrets never reach a log, an error or
//! a document: errors name the file and a position, never its content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;

use rtm_core::model::ImageName;
use rtm_core::model::image::DOCKER_HUB;

use crate::runtime::RegistryCredentials;

/// Why the auth file gave nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFileError {
    /// It cannot be read (missing, no permission).
    #[error("registry auth file {path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// It is not a Docker config.json: what is wrong and where, never the content.
    #[error("registry auth file {path} is not a Docker config.json: {problem}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong and where (line, column, host), without any value.
        problem: String,
    },
}

/// The auth file, as last read: reads it again when its modification time or size
/// changes (a Kubernetes Secret update swaps the file), else answers from memory.
#[derive(Debug)]
pub struct RegistryAuth {
    path: Option<PathBuf>,
    cached: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    stamp: (Option<SystemTime>, u64),
    parsed: Result<BTreeMap<String, RegistryCredentials>, AuthFileError>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl RegistryAuth {
    /// Credentials from `path`; `None`: every pull is anonymous.
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    /// The file, if one was given.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The credentials for the registry of `image`; `Ok(None)` when the file names
    /// none for its host (or there is no file): the pull is anonymous.
    pub fn for_image(&self, image: &str) -> Result<Option<RegistryCredentials>, AuthFileError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let Some(host) = ImageName::parse(image).map(|name| name.registry) else {
            return Ok(None);
        };
        let unreadable = |e: std::io::Error| AuthFileError::Unreadable {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        let stamp = (meta.modified().ok(), meta.len());
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.as_ref().is_none_or(|c| c.stamp != stamp) {
            let parsed = std::fs::read(path)
                .map_err(unreadable)
                .and_then(|bytes| parse(path, &bytes));
            if let Ok(hosts) = &parsed {
                tracing::info!(
                    file = %path.display(),
                    hosts = ?hosts.keys().collect::<Vec<_>>(),
                    "read the registry auth file"
                );
            }
            *cached = Some(Cached { stamp, parsed });
        }
        let cached = cached.as_ref().expect("the cache was filled just above");
        match &cached.parsed {
            Ok(hosts) => Ok(hosts.get(&host).cloned()),
            Err(e) => Err(e.clone()),
        }
    }
}

/// The credentials per registry host of a config.json.
fn parse(
    path: &Path,
    bytes: &[u8],
) -> Result<BTreeMap<String, RegistryCredentials>, AuthFileError> {
    let malformed = |problem: String| AuthFileError::Malformed {
        path: path.display().to_string(),
        problem,
    };
    // serde_json's messages can quote a value (a password): say only what kind of
    // error it is and where.
    let config: ConfigJson = serde_json::from_slice(bytes).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected content",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        malformed(format!("{kind} at line {} column {}", e.line(), e.column()))
    })?;
    let mut hosts = BTreeMap::new();
    for (key, entry) in config.auths {
        let server = host_of(&key);
        let (username, password) = match (&entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.trim().is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        malformed(format!("auths.{key:?}.auth is not base64 of user:password"))
                    })?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    malformed(format!("auths.{key:?}.auth is not base64 of user:password"))
                })?;
                (user.to_owned(), password.to_owned())
            }
            (_, Some(user), Some(password)) => (user, password),
            _ if entry.identitytoken.is_some() => (String::new(), String::new()),
            _ => {
                return Err(malformed(format!(
                    "auths.{key:?} has neither auth, nor username and password, nor identitytoken"
                )));
            }
        };
        hosts.insert(
            server.clone(),
            RegistryCredentials {
                server,
                username,
                password,
                identity_token: entry.identitytoken.filter(|t| !t.is_empty()),
            },
        );
    }
    Ok(hosts)
}

/// The registry host a config.json key names: `https://host:port/v1/` → `host:port`;
/// Docker Hub's historic names → `docker.io` (what [`ImageName`] calls it).
fn host_of(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn credentials_are_found_by_the_images_registry_host() {
        let (_dir, path) = file(&format!(
            r#"{{"auths": {{
                "127.0.0.1:5101": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "pw2"}},
                "https://registry.example/": {{"identitytoken": "tok"}}
            }}}}"#,
            b64("rtm:s3cret:with:colons")
        ));
        let auth = RegistryAuth::new(Some(path));
        let local = auth
            .for_image("127.0.0.1:5101/pulls/engine:1")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                local.server.as_str(),
                local.username.as_str(),
                local.password.as_str()
            ),
            ("127.0.0.1:5101", "rtm", "s3cret:with:colons")
        );
        let hub = auth.for_image("galaxy/engine:1").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "pw2")
        );
        let token = auth.for_image("registry.example/x:1").unwrap().unwrap();
        assert_eq!(token.identity_token.as_deref(), Some("tok"));
        assert_eq!(auth.for_image("127.0.0.1:5100/pulls/engine:1"), Ok(None));
        assert_eq!(
            RegistryAuth::new(None).for_image("galaxy/engine:1"),
            Ok(None)
        );
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let (_dir, path) = file(&format!(
            r#"{{"auths": {{"127.0.0.1:5101": {{"auth": "{}"}}}}}}"#,
            b64("rtm:old")
        ));
        let auth = RegistryAuth::new(Some(path.clone()));
        let image = "127.0.0.1:5101/p:1";
        assert_eq!(auth.for_image(image).unwrap().unwrap().password, "old");
        // A different size is a change even within the file system's time granularity.
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"127.0.0.1:5101": {{"auth": "{}"}}}}}}"#,
                b64("rtm:newer")
            ),
        )
        .unwrap();
        assert_eq!(auth.for_image(image).unwrap().unwrap().password, "newer");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            auth.for_image(image),
            Err(AuthFileError::Unreadable { .. })
        ));
    }

    #[test]
    fn a_malformed_file_is_named_without_its_secrets() {
        for content in [
            r#"{"auths": {"127.0.0.1:5101": {"auth": "hunter2-not-base64!"}}}"#.to_owned(),
            r#"{"auths": {"127.0.0.1:5101": "hunter2"}}"#.to_owned(),
            r#"{"auths": {"127.0.0.1:5101": {"username": "u", "password": "hunter2""#.to_owned(),
            r#"{"auths": {"127.0.0.1:5101": {"password": "hunter2"}}}"#.to_owned(),
            format!(
                r#"{{"auths": {{"h:1": {{"auth": "{}"}}}}}}"#,
                b64("hunter2")
            ),
        ] {
            let (_dir, path) = file(&content);
            let error = RegistryAuth::new(Some(path))
                .for_image("127.0.0.1:5101/p:1")
                .unwrap_err();
            let text = error.to_string();
            assert!(matches!(error, AuthFileError::Malformed { .. }), "{text}");
            assert!(!text.contains("hunter2"), "{content} gave {text}");
        }
    }

    #[test]
    fn credentials_debug_leaves_the_password_out() {
        let credentials = RegistryCredentials {
            server: "h:1".into(),
            username: "rtm".into(),
            password: "hunter2".into(),
            identity_token: Some("tok-hunter2".into()),
        };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("rtm"), "{shown}");
    }
}
