//! `tsunagu-email`: run the mailing-list bridge, or write its registration file.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tsunagu_appservice::cli::main::<email::Config>().await
}
