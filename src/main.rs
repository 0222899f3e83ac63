//! The `tsunagu` command: run the server, or administer its data directory.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tsunagu::{Config, Server, service::Services};

#[derive(Parser)]
#[command(
    name = "tsunagu",
    version,
    about = "A Matrix homeserver for communities"
)]
struct Cli {
    /// Configuration file (TOML). Without it, defaults and TSUNAGU_* variables apply.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver.
    Serve,
    /// Administer accounts, registration tokens and media (works on the data directory).
    Admin {
        #[command(subcommand)]
        command: Admin,
    },
}

#[derive(Subcommand)]
enum Admin {
    /// Create an account.
    CreateUser {
        /// The user name (localpart), e.g. `alice`.
        name: String,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
        /// The password; asked for when omitted.
        #[arg(long)]
        password: Option<String>,
    },
    /// Manage registration tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Application services (bridges).
    Appservice {
        #[command(subcommand)]
        command: AppserviceCmd,
    },
    /// Print the newest reports of events and rooms users made, one JSON object a line.
    Reports {
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// The media repository (files in DATA_DIR/media).
    Media {
        #[command(subcommand)]
        command: MediaCmd,
    },
    /// Replace the server's signing key with a new one (with the server stopped), e.g. after
    /// the data directory leaked. The old key stays published as an old key, expired now, so
    /// other servers can still check what it signed.
    RotateSigningKey,
}

#[derive(Subcommand)]
enum MediaCmd {
    /// Delete old media that nothing uses, to take back disk space.
    #[command(
        long_about = "Delete old media that nothing uses, to take back disk space. \
Run it with the server stopped, on the same config (data directory).

It deletes:
  - media uploaded longer ago than --older-than that no stored event (any message, state \
or member event, in any room) and no profile avatar names by its mxc:// URI. The server cannot \
read encrypted messages: files sent in encrypted rooms count as unused and are deleted once \
older than --older-than;
  - all media of deactivated accounts (no longer served since the deactivation), of any age;
  - media IDs created for a later upload that expired without content;
  - then every file and thumbnail that no remaining media names (identical uploads share one \
file, kept while any of them is), and leftovers of interrupted uploads.

It keeps everything else, in particular any media an event or avatar names, whatever its age."
    )]
    Purge {
        /// Age past which unused media goes: a number and a unit, s, m, h, d or w (`30d`).
        #[arg(long, value_parser = parse_age)]
        older_than: std::time::Duration,
    },
}

/// `30d`, `12h`, `90m`, `45s`, `2w`.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("give a unit: s, m, h, d or w (e.g. 30d)")?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h, d or w")),
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text} is too long"))
}

#[derive(Subcommand)]
enum AppserviceCmd {
    /// Check a registration file and print what it will claim; then list it under
    /// `appservices` in the config.
    Register {
        /// The registration file (YAML).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a registration token.
    New {
        /// How many registrations it allows (unlimited when omitted).
        #[arg(long)]
        uses: Option<u32>,
    },
}

fn main() -> ExitCode {
    tune_malloc();
    raise_open_file_limit();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TSUNAGU_LOG")
                .unwrap_or_else(|_| "tsunagu=info,warn".into()),
        )
        .init();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tsunagu: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tsunagu: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsunagu: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Admin { command } => admin(command, config).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server_name = config.server_name.clone();
    let data_dir = config.data_dir.clone();
    let registration = config.registration;
    let server = Server::start(config).await?;
    println!(
        "Tsunagu is serving {server_name} on {} (data in {})",
        server.url(),
        data_dir.display()
    );
    println!("Registration: {registration:?}");
    if let Some(token) = &server.first_start_token {
        println!("First start: registration token for the first account: {token}");
        println!(
            "  Register in Element with homeserver {} and this token,",
            server.url()
        );
    }
    println!("  or create an account with: tsunagu admin create-user NAME --admin");
    let services = server.services().clone();
    tokio::select! {
        r = server.wait() => r,
        _ = shutdown_signal() => {
            services.core.persist().await?;
            println!("Stopped.");
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn admin(command: Admin, config: Config) -> anyhow::Result<()> {
    if let Admin::Appservice {
        command: AppserviceCmd::Register { file },
    } = &command
    {
        let a = tsunagu::service::appservice::check_file(file, &config.server_name)?;
        println!("{}", a.describe());
        if !config.appservices.iter().any(|p| p == file) {
            println!(
                "Valid. Add it to the config to load it: appservices = [{:?}]",
                file.display().to_string()
            );
        }
        return Ok(());
    }
    let services = Services::open(config).await?;
    match command {
        Admin::CreateUser {
            name,
            admin,
            password,
        } => {
            let user_id = services.users.user_id_for_localpart(&name)?;
            let password = match password {
                Some(p) => p,
                None => {
                    print!("Password for {user_id}: ");
                    std::io::stdout().flush()?;
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if password.is_empty() {
                anyhow::bail!("the password must not be empty");
            }
            services
                .users
                .create_account(&user_id, Some(&password), admin, None)
                .await?;
            println!("Created {user_id}{}", if admin { " (admin)" } else { "" });
        }
        Admin::Token {
            command: TokenCmd::New { uses },
        } => {
            let token = services.users.new_registration_token(uses).await?;
            println!("{token}");
        }
        Admin::Reports { limit } => {
            for (n, report) in services.reports.list(limit)? {
                let mut line = serde_json::to_value(&report)?;
                line["report"] = n.into();
                println!("{line}");
            }
        }
        Admin::Media {
            command: MediaCmd::Purge { older_than },
        } => {
            let purged = services.purge_media(older_than).await?;
            services.core.persist().await?;
            println!(
                "Deleted {} media, {} files ({} bytes).",
                purged.media, purged.files, purged.bytes
            );
        }
        Admin::RotateSigningKey => {
            let key_id = services.core.rotate_signing_key().await?;
            println!("The server now signs with {key_id}; the old key is published as expired.");
        }
        Admin::Appservice { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// Every connection holds a file descriptor, and shells and service managers often start
/// processes with a soft limit of 1024: raise it to the hard limit, as most servers do.
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the process's own limits.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// glibc keeps freed memory in per-thread arenas and raises its mmap threshold after a large
/// buffer is freed, so one burst (argon2 hashes 19 MiB each) stays in the RSS for good. Two
/// arenas and a fixed 1 MiB mmap threshold give memory back: it matters on a 512 MiB board.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
