//! The `portcullis` command: `serve` runs the gateway; `check`, `explain`,
//! `test` and `token` run the decision engine offline against a configuration.
//!
//! Exit codes: 0 success; 1 the configuration is invalid or a test case
//! failed; 2 bad command-line input.

mod bans;
mod cmd;
mod jwks;
mod limits;
mod report;
mod request;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version,
    about = "An access-control gateway for HTTP services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway in front of the configured upstream.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Listen here instead of the configured address (port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate the configuration, policies, schema, entities and routes.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one request through the engine and print every stage.
    Explain(ExplainArgs),
    /// Run a table of request -> expected outcome cases.
    Test {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The cases file (TOML).
        cases: PathBuf,
        /// Run the cases as of this time (Unix seconds) instead of now.
        #[arg(long)]
        now: Option<i64>,
    },
    /// Mint a token with the configured HMAC key (for demos and tests).
    Token(TokenArgs),
    /// List, add or lift timed bans.
    Ban(BanArgs),
}

#[derive(clap::Args, Debug)]
struct BanArgs {
    /// The configuration file (required).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: BanAction,
}

#[derive(Subcommand, Debug)]
enum BanAction {
    /// The bans in force.
    List,
    /// Ban an address or network.
    Add {
        /// `203.0.113.7`, `ip:203.0.113.7`, or a network such as `203.0.113.0/24`.
        target: String,
        /// How long, e.g. 30m, 2h.
        #[arg(long = "for")]
        r#for: String,
        /// Why (shown by `ban list` and in the decision log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a ban.
    Remove {
        /// As given to `add`, or as `ban list` shows it.
        target: String,
    },
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
    /// The configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// The method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request target, as it would appear on the request line.
    #[arg(long)]
    path: String,
    /// A header, as 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// A bearer token (sent as `Authorization: Bearer <token>`).
    #[arg(long)]
    token: Option<String>,
    /// The client address.
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Decide as of this time (Unix seconds) instead of now, to replay a
    /// logged request or check a time-dependent policy.
    #[arg(long)]
    now: Option<i64>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// The configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// The subject.
    #[arg(long)]
    sub: String,
    /// A role (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// A scope (repeatable).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime, e.g. 1h, 15m; negative for an already expired token.
    #[arg(long, default_value = "1h", allow_hyphen_values = true)]
    ttl: String,
    /// A further claim as key=value; the value is JSON if it parses, else a string.
    #[arg(long = "claim")]
    claims: Vec<String>,
}

/// mimalloc in place of glibc's allocator: a proxied request makes a few
/// dozen small allocations (header maps, strings, futures), and glibc's
/// malloc and free were about a tenth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    report::install_error_hook();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => serve::run(&config, listen),
        Command::Check { config } => cmd::check::run(&config),
        Command::Explain(args) => cmd::explain::run(&args),
        Command::Test { config, cases, now } => cmd::test::run(&config, &cases, now),
        Command::Token(args) => cmd::token::run(&args),
        Command::Ban(args) => cmd::ban::run(&args),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
