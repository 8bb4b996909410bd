//! `portcullis check`: load everything; report problems or a summary.

use std::path::Path;
use std::process::ExitCode;

use super::load;

pub fn run(config: &Path) -> ExitCode {
    let loaded = match load(config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let routes = loaded.engine.routes().len();
    println!(
        "{}: ok ({routes} route{}, policies valid against the schema)",
        config.display(),
        if routes == 1 { "" } else { "s" }
    );
    ExitCode::SUCCESS
}
