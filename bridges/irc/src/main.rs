//! `tsunagu-irc`: run the IRC bridge, or write its registration file.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Tsunagu's IRC bridge (a Matrix application service)")]
struct Cli {
    /// The bridge's config file (see config.example.toml).
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TSUNAGU_IRC_LOG")
                .unwrap_or_else(|_| "irc=info,tsunagu_appservice=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = async {
        let config = irc::Config::load(&cli.config)?;
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => irc::run(config).await,
            Command::GenerateRegistration { force } => {
                let reg = irc::generate_registration(&config, force)?;
                println!(
                    "Wrote {} (appservice {:?}, bot @{}:{}, users {}).\n\
                     Add it to the homeserver's config:  appservices = [\"{}\"]  and restart it.",
                    config.registration.display(),
                    reg.id,
                    reg.sender_localpart,
                    config.server_name,
                    reg.namespaces.users[0].regex,
                    config.registration.display()
                );
                Ok(())
            }
        }
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsunagu-irc: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
