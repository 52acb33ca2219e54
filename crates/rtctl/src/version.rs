//! `rtctl version`: this rtctl's version and, unless `--client`, the version of every live
//! controller, read from the heartbeats they keep under `controllers/` (a heartbeat is live
//! only while it sits on an etcd lease, as the controllers judge each other's); a warning on
//! stderr when versions differ (skew).
//!
//! The git commit shows when the build was given one: `RTM_GIT_COMMIT=$(git rev-parse
//! --short HEAD) cargo build` (no build script reads git for it).

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

use super::client::Client;
use super::context::{self, ConnectionArgs, Explicit};
use super::error::{CliError, Outcome};
use super::output::{Table, age_since, warn};
use rtm_core::model::Timestamp;
use rtm_core::records::lease::Heartbeat;
use rtm_core::store::KeyValue;

/// `rtctl version` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct VersionArgs {
    /// Only this rtctl's version: etcd is not asked.
    #[arg(long)]
    pub(crate) client: bool,
    /// Output format (default: text and a table).
    #[arg(short = 'o', long = "output", value_enum)]
    pub(crate) output: Option<VersionFormat>,
}

/// The `-o` formats of `rtctl version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum VersionFormat {
    Json,
    Yaml,
}

/// This rtctl's build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientVersion {
    pub(crate) version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) git_commit: Option<String>,
}

impl ClientVersion {
    /// The version of this build.
    pub(crate) fn this() -> ClientVersion {
        ClientVersion {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: option_env!("RTM_GIT_COMMIT")
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        }
    }
}

/// One live controller, from its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ControllerVersion {
    pub(crate) holder: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
    pub(crate) version: String,
    pub(crate) started_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) renewed_at: Option<Timestamp>,
}

/// What `-o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionReport<'a> {
    client_version: &'a ClientVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    controllers: Option<&'a [ControllerVersion]>,
}

/// `rtctl version`: prints the client's version first, so an unreachable etcd still shows it
/// before its error.
pub(crate) async fn version(
    args: &VersionArgs,
    connection: &ConnectionArgs,
    explicit: &Explicit,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client_version = ClientVersion::this();
    if args.client {
        print(args.output, &client_version, None, out)?;
        return Ok(Outcome::Success);
    }
    let controllers = match live_controllers(connection, explicit).await {
        Ok(controllers) => controllers,
        Err(error) => {
            print(args.output, &client_version, None, out)?;
            out.flush()?;
            return Err(error);
        }
    };
    print(args.output, &client_version, Some(&controllers), out)?;
    for warning in skew(&client_version.version, &controllers) {
        warn(&warning);
    }
    Ok(Outcome::Success)
}

async fn live_controllers(
    connection: &ConnectionArgs,
    explicit: &Explicit,
) -> Result<Vec<ControllerVersion>, CliError> {
    let resolved = context::resolve(connection, explicit)?;
    let client = Client::connect(&resolved).await?;
    let prefix = client.keys().controllers();
    let (listings, _) = client
        .list_at_one_revision(std::slice::from_ref(&prefix))
        .await?;
    Ok(listings
        .iter()
        .flat_map(|listing| &listing.items)
        .filter_map(|kv| live(&prefix, kv))
        .collect())
}

/// The controller of a heartbeat key, when it is live: on a lease (a key put by hand on none
/// never expires), decodable, and naming the holder its key names.
fn live(prefix: &str, kv: &KeyValue) -> Option<ControllerVersion> {
    let holder = kv.key.strip_prefix(prefix)?;
    if kv.lease == 0 {
        return None;
    }
    let heartbeat: Heartbeat = serde_json::from_slice(&kv.value).ok()?;
    (heartbeat.holder == holder).then_some(ControllerVersion {
        holder: heartbeat.holder,
        node: heartbeat.node,
        version: heartbeat.version,
        started_at: heartbeat.started_at,
        renewed_at: heartbeat.renewed_at,
    })
}

fn print(
    format: Option<VersionFormat>,
    client: &ClientVersion,
    controllers: Option<&[ControllerVersion]>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let report = VersionReport {
        client_version: client,
        controllers,
    };
    match format {
        Some(VersionFormat::Json) => {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::internal(format!("cannot print the versions: {e}")))?;
            writeln!(out, "{text}")?;
        }
        Some(VersionFormat::Yaml) => {
            let text = serde_yaml::to_string(&report)
                .map_err(|e| CliError::internal(format!("cannot print the versions: {e}")))?;
            out.write_all(text.as_bytes())?;
        }
        None => out.write_all(text(client, controllers, SystemTime::now()).as_bytes())?,
    }
    Ok(())
}

/// The text form: the client's line, then a table of the controllers.
fn text(
    client: &ClientVersion,
    controllers: Option<&[ControllerVersion]>,
    now: SystemTime,
) -> String {
    let mut text = format!("Client Version: {}", client.version);
    if let Some(commit) = &client.git_commit {
        text.push_str(&format!(" (commit {commit})"));
    }
    text.push('\n');
    match controllers {
        None => {}
        Some([]) => text.push_str("No live controllers (no heartbeat on a lease).\n"),
        Some(controllers) => {
            let mut table = Table::new(["CONTROLLER", "NODE", "VERSION", "STARTED"]);
            for c in controllers {
                table.row([
                    c.holder.clone(),
                    c.node.clone().unwrap_or_else(|| "<none>".into()),
                    c.version.clone(),
                    age_since(Some(c.started_at), now),
                ]);
            }
            text.push_str(&table.render());
        }
    }
    text
}

/// The warnings about versions that differ: a controller's from the client's, and the
/// controllers' among themselves.
fn skew(client: &str, controllers: &[ControllerVersion]) -> Vec<String> {
    let mut warnings: Vec<String> = controllers
        .iter()
        .filter(|c| c.version != client)
        .map(|c| {
            format!(
                "controller {} runs version {}, this rtctl is {client} (version skew)",
                c.holder, c.version
            )
        })
        .collect();
    let mut versions: Vec<&str> = controllers.iter().map(|c| c.version.as_str()).collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.len() > 1 {
        warnings.push(format!(
            "the controllers run different versions: {} (an upgrade under way?)",
            versions.join(", ")
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn heartbeat_kv(key: &str, holder: &str, version: &str, lease: i64) -> KeyValue {
        let mut heartbeat = Heartbeat::new(holder, Some("node-a"));
        heartbeat.version = version.into();
        KeyValue {
            key: key.into(),
            value: serde_json::to_vec(&heartbeat).unwrap(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease,
        }
    }

    fn controller(holder: &str, version: &str) -> ControllerVersion {
        ControllerVersion {
            holder: holder.into(),
            node: Some("node-a".into()),
            version: version.into(),
            started_at: Timestamp::now(),
            renewed_at: None,
        }
    }

    #[test]
    fn only_heartbeats_on_a_lease_naming_their_key_are_live() {
        let prefix = "/p/controllers/";
        let live_one = live(prefix, &heartbeat_kv("/p/controllers/c1", "c1", "1.0.0", 7));
        assert_eq!(live_one.map(|c| c.version), Some("1.0.0".into()));
        assert!(live(prefix, &heartbeat_kv("/p/controllers/c1", "c1", "1", 0)).is_none());
        assert!(live(prefix, &heartbeat_kv("/p/controllers/c1", "c2", "1", 7)).is_none());
        let mut garbage = heartbeat_kv("/p/controllers/c1", "c1", "1", 7);
        garbage.value = b"not json".to_vec();
        assert!(live(prefix, &garbage).is_none());
    }

    #[test]
    fn skew_warns_about_the_client_and_among_controllers() {
        assert!(skew("1.0.0", &[controller("a", "1.0.0")]).is_empty());
        let warnings = skew(
            "1.0.0",
            &[controller("a", "1.0.0"), controller("b", "1.1.0")],
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("controller b runs version 1.1.0"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("1.0.0, 1.1.0"), "{warnings:?}");
    }

    #[test]
    fn the_text_has_the_client_line_and_a_table() {
        let client = ClientVersion {
            version: "1.0.0".into(),
            git_commit: Some("abc123".into()),
        };
        let mut c = controller("ctl-1", "1.0.0");
        let now = c.started_at.system_time() + Duration::from_secs(120);
        c.node = None;
        let text = text(&client, Some(&[c]), now);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("Client Version: 1.0.0 (commit abc123)"));
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["CONTROLLER", "NODE", "VERSION", "STARTED"]);
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row, ["ctl-1", "<none>", "1.0.0", "2m"]);
    }

    #[test]
    fn json_has_stable_camel_case_names() {
        let client = ClientVersion::this();
        let report = VersionReport {
            client_version: &client,
            controllers: Some(&[controller("a", "1")]),
        };
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["clientVersion"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(value["controllers"][0]["holder"], "a");
        assert_eq!(value["controllers"][0]["node"], "node-a");
        assert!(value["controllers"][0]["startedAt"].is_string(), "{value}");
    }
}
