//! `tsunagu-irc`: run the IRC bridge, or write its registration file.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tsunagu_appservice::cli::main::<irc::Config>().await
}
