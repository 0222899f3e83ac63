//! The command line every bridge binary has: `run` (the default) and `generate-registration`,
//! a `--config` file, and a log filter from an environment variable.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::Registration;

/// A bridge, as its binary sees it.
pub trait Bridge: Sized {
    /// The binary's name, e.g. `tsunagu-irc`.
    const BINARY: &'static str;
    /// One line on what it is.
    const ABOUT: &'static str;
    /// The environment variable with the log filter, e.g. `TSUNAGU_IRC_LOG`.
    const LOG_VAR: &'static str;
    /// The log filter without that variable.
    const DEFAULT_LOG: &'static str;

    /// Reads and checks the config file.
    fn load(path: &Path) -> anyhow::Result<Self>;
    /// The registration file the config names.
    fn registration_path(&self) -> &Path;
    /// The homeserver's domain.
    fn server_name(&self) -> &str;
    /// Writes a new registration (refusing to replace one unless `force`).
    fn generate_registration(&self, force: bool) -> anyhow::Result<Registration>;
    /// Runs the bridge until the process ends.
    fn run(self) -> impl Future<Output = anyhow::Result<()>>;
}

#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The bridge's config file (see config/ in the repository for an example).
    #[arg(short, long, default_value = "config.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default).
    Run,
    /// Write the registration file named in the config, with fresh tokens; then list it under
    /// `appservices` in the homeserver's config and restart the homeserver.
    GenerateRegistration {
        /// Replace an existing registration (the homeserver must then load the new one).
        #[arg(long)]
        force: bool,
    },
}

/// The whole `main` of a bridge binary.
pub async fn main<B: Bridge>() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(B::LOG_VAR)
                .unwrap_or_else(|_| B::DEFAULT_LOG.into()),
        )
        .init();
    let matches = Cli::command().name(B::BINARY).about(B::ABOUT).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = async {
        let bridge = B::load(&cli.config)?;
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => bridge.run().await,
            Command::GenerateRegistration { force } => {
                let reg = bridge.generate_registration(force)?;
                let path = bridge.registration_path().display();
                println!(
                    "Wrote {path} (appservice {:?}, bot @{}:{}, users {}).\n\
                     Add it to the homeserver's config:  appservices = [\"{path}\"]  and restart it.",
                    reg.id,
                    reg.sender_localpart,
                    bridge.server_name(),
                    reg.namespaces.users[0].regex,
                );
                Ok(())
            }
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", B::BINARY);
            ExitCode::FAILURE
        }
    }
}
