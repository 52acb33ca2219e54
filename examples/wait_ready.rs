//! Waits until a game is Ready by watching its status in etcd: how a
//! deploy script or another service can build on rtmanager's library.
//!
//! ```sh
//! cargo run --example wait_ready -- arena-1 60s
//! ```
//!
//! Reads `RTM_ETCD_ENDPOINTS` and `RTM_PREFIX` like every rtmanager binary.
//! Exits 0 once the game's Ready condition is True, 1 on timeout, 2 on a
//! usage or connection error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use rtm_core::model::{ConditionStatus, GameRuntimeStatus};
use rtm_core::records::status;
use rtm_core::store::etcd::{DEFAULT_ENDPOINT, EtcdConfig, EtcdStore};
use rtm_core::store::{Keys, Store, WatchEvent};

fn is_ready(status: &GameRuntimeStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
}

async fn wait_ready(game: &str, limit: Duration) -> anyhow::Result<bool> {
    rtm_core::model::validate::validate_name(game)
        .map_err(|reason| anyhow::anyhow!("invalid game name {game:?}: {reason}"))?;
    let endpoints = std::env::var("RTM_ETCD_ENDPOINTS").unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
    let prefix = std::env::var("RTM_PREFIX").unwrap_or_else(|_| "/rtmanager".into());
    let keys = Keys::new(&prefix)?;
    let store = EtcdStore::connect(&EtcdConfig::new(
        endpoints.split(',').map(|e| e.trim().to_owned()).collect(),
    ))
    .await?;

    // Read the status once, then watch from the revision after that read,
    // so no change in between is missed.
    let key = keys.status(game);
    let listing = store.list(&key, None).await.context("reading the status")?;
    for kv in listing.items.iter().filter(|kv| kv.key == key) {
        if is_ready(&status::decode(kv)?) {
            return Ok(true);
        }
    }
    let mut changes = store.watch(&key, listing.revision + 1).await?;
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(false),
            batch = changes.next() => {
                let batch = batch.context("the watch ended")??;
                for event in batch {
                    if let WatchEvent::Put(kv) = event
                        && kv.key == key
                        && is_ready(&status::decode(&kv)?)
                    {
                        return Ok(true);
                    }
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(game), limit) = (args.next(), args.next()) else {
        eprintln!("usage: wait_ready GAME [TIMEOUT, e.g. 60s]");
        return ExitCode::from(2);
    };
    let limit = match limit.as_deref().map(humantime::parse_duration).transpose() {
        Ok(limit) => limit.unwrap_or(Duration::from_secs(60)),
        Err(error) => {
            eprintln!("wait_ready: bad timeout: {error}");
            return ExitCode::from(2);
        }
    };
    match wait_ready(&game, limit).await {
        Ok(true) => {
            println!("{game} is ready");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!(
                "wait_ready: {game} not ready after {}",
                humantime::format_duration(limit)
            );
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("wait_ready: {error:#}");
            ExitCode::from(2)
        }
    }
}
