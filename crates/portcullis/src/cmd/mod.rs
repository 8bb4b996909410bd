//! One module per subcommand.

pub mod ban;
pub mod check;
pub mod explain;
pub mod test;
pub mod token;

use std::path::Path;
use std::process::ExitCode;

use portcullis_config::Loaded;

use crate::report;

/// Exit code for an invalid configuration or a failed case.
pub const FAILED: u8 = 1;
/// Exit code for bad command-line input.
pub const USAGE: u8 = 2;

/// Load a configuration, printing diagnostics on failure.
pub fn load(config: &Path) -> Result<Loaded, ExitCode> {
    portcullis_config::load(config).map_err(|e| {
        report::print_load_error(&e);
        ExitCode::from(FAILED)
    })
}

/// Load a configuration and fetch its JWKS URLs, for commands that verify tokens.
pub fn load_with_keys(config: &Path) -> Result<Loaded, ExitCode> {
    let loaded = load(config)?;
    crate::jwks::fetch_once(&loaded).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(FAILED)
    })?;
    Ok(loaded)
}

/// Print a command-line error and return the usage exit code.
pub fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(USAGE)
}

/// The current time in Unix seconds (the CLI's clock; the engine takes it as input).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// `t` in Unix milliseconds.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
