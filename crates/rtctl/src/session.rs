//! `rtctl allocate` and `rtctl release`: an operator starts or ends a game's session, through
//! the same atomic calls a matchmaker makes (`rtm_core::records::sessions`), recorded with
//! source `admin_cli`.

use std::io::Write;

use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use rtm_core::model::OpSource;
use rtm_core::records::sessions::{Released, SessionRequest, validate_ref};

/// The arguments of `rtctl allocate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AllocateArgs {
    /// The game (`NAME` or `gameruntime/NAME`).
    #[arg(value_parser = crate::resource::game_word, value_name = "NAME", add = crate::complete::game_names())]
    pub(crate) name: String,
    /// The match or request id recorded with the session.
    #[arg(long = "ref", value_name = "REF")]
    pub(crate) reference: Option<String>,
}

/// The arguments of `rtctl release`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// The game (`NAME` or `gameruntime/NAME`).
    #[arg(value_parser = crate::resource::game_word, value_name = "NAME", add = crate::complete::game_names())]
    pub(crate) name: String,
    /// The request id recorded with the release (the session's own ref when absent).
    #[arg(long = "ref", value_name = "REF")]
    pub(crate) reference: Option<String>,
    /// Release only if the session holding the game has this ref.
    #[arg(long = "if-ref", value_name = "REF")]
    pub(crate) if_ref: Option<String>,
}

fn check(reference: Option<&String>, flag: &str) -> Result<(), CliError> {
    match reference {
        Some(reference) => validate_ref(reference).map_err(|message| {
            CliError::invalid(format!("invalid {flag} {reference:?}: {message}"))
        }),
        None => Ok(()),
    }
}

/// `rtctl allocate NAME [--ref REF]`.
pub(crate) async fn allocate(
    client: &Client,
    args: &AllocateArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_name(&args.name)?;
    check(args.reference.as_ref(), "--ref")?;
    let request = SessionRequest {
        reference: args.reference.clone(),
        source: Some(OpSource::AdminCli.as_str().to_owned()),
        expected: None,
    };
    let session = client
        .sessions()
        .allocate(&args.name, &request)
        .await
        .map_err(|e| client.session_error(e, &format!("allocating gameruntime/{}", args.name)))?;
    writeln!(
        out,
        "gameruntime/{} allocated{}",
        args.name,
        with_ref(session.value.reference.as_deref())
    )?;
    Ok(Outcome::Success)
}

/// `rtctl release NAME [--ref REF] [--if-ref REF]`: an idle game stays idle (exit 0).
pub(crate) async fn release(
    client: &Client,
    args: &ReleaseArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_name(&args.name)?;
    check(args.reference.as_ref(), "--ref")?;
    check(args.if_ref.as_ref(), "--if-ref")?;
    // Releasing a game that does not exist is a mistake worth saying (its record would be
    // left alone anyway).
    client.require(&args.name).await?;
    let request = SessionRequest {
        reference: args.reference.clone(),
        source: Some(OpSource::AdminCli.as_str().to_owned()),
        expected: args.if_ref.clone(),
    };
    let released = client
        .sessions()
        .release(&args.name, &request)
        .await
        .map_err(|e| client.session_error(e, &format!("releasing gameruntime/{}", args.name)))?;
    match released {
        Released::Ended(session) => writeln!(
            out,
            "gameruntime/{} released{}",
            args.name,
            with_ref(session.value.reference.as_deref())
        )?,
        Released::AlreadyIdle => writeln!(
            out,
            "gameruntime/{} was idle (not allocated); nothing to release",
            args.name
        )?,
    }
    Ok(Outcome::Success)
}

/// ` (ref X)`, or nothing.
pub(crate) fn with_ref(reference: Option<&str>) -> String {
    reference.map(|r| format!(" (ref {r})")).unwrap_or_default()
}
