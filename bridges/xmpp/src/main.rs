//! `tsunagu-xmpp`: run the XMPP bridge, or write its registration file.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tsunagu_appservice::cli::main::<xmpp::Config>().await
}
