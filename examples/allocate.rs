//! Allocates a game to a match, or releases it: the library call a matchmaker written in
//! Rust makes (one in another language makes the same etcd transaction; README,
//! "Sessions", shows it with `etcdctl txn`).
//!
//! ```sh
//! cargo run --example allocate -- duel-1 match-42            # allocate
//! cargo run --example allocate -- duel-1 match-42-over release
//! ```
//!
//! Reads `RTM_ETCD_ENDPOINTS` and `RTM_PREFIX` like every rtmanager binary. Exits 0 when
//! done, 1 when the game cannot be allocated (not Ready, already allocated, busy; the
//! message says which, with the error code), 2 on a usage or connection error.

use std::process::ExitCode;
use std::sync::Arc;

use rtm_core::records::sessions::{Released, SessionError, SessionRequest, Sessions};
use rtm_core::store::etcd::{DEFAULT_ENDPOINT, EtcdConfig, EtcdStore};
use rtm_core::store::{Keys, Store};

async fn sessions() -> anyhow::Result<Sessions> {
    let endpoints = std::env::var("RTM_ETCD_ENDPOINTS").unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
    let prefix = std::env::var("RTM_PREFIX").unwrap_or_else(|_| "/rtmanager".into());
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&EtcdConfig::new(
            endpoints.split(',').map(|e| e.trim().to_owned()).collect(),
        ))
        .await?,
    );
    Ok(Sessions::new(store, Keys::new(&prefix)?))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (game, reference, release) = match args.as_slice() {
        [game, reference] => (game, reference, false),
        [game, reference, verb] if verb == "release" => (game, reference, true),
        _ => {
            eprintln!("usage: allocate GAME REF [release]");
            return ExitCode::from(2);
        }
    };
    let sessions = match sessions().await {
        Ok(sessions) => sessions,
        Err(error) => {
            eprintln!("allocate: {error:#}");
            return ExitCode::from(2);
        }
    };
    let request = SessionRequest {
        reference: Some(reference.clone()),
        ..SessionRequest::default()
    };
    let outcome = if release {
        sessions
            .release(game, &request)
            .await
            .map(|released| match released {
                Released::Ended(_) => format!("{game} released ({reference})"),
                Released::AlreadyIdle => format!("{game} was idle"),
            })
    } else {
        sessions
            .allocate(game, &request)
            .await
            .map(|_| format!("{game} allocated ({reference})"))
    };
    match outcome {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(error @ SessionError::Store(_)) => {
            eprintln!("allocate: {error} [{}]", error.code());
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("allocate: {error} [{}]", error.code());
            ExitCode::from(1)
        }
    }
}
