//! `portcullis token`: mint a token with the configured HMAC key.

use std::process::ExitCode;

use super::{USAGE, load, now, usage};
use crate::TokenArgs;
use portcullis_config::mint::{TokenSpec, mint};

pub fn run(args: &TokenArgs) -> ExitCode {
    let loaded = match load(&args.config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let ttl = match portcullis_config::duration::parse_seconds(&args.ttl) {
        Ok(t) => t,
        Err(e) => return usage(format!("--ttl: {e}")),
    };
    let mut claims = serde_json::Map::new();
    for c in &args.claims {
        let Some((k, v)) = c.split_once('=') else {
            return usage(format!("--claim {c:?}: write it as key=value"));
        };
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
        claims.insert(k.to_owned(), value);
    }
    let spec = TokenSpec {
        sub: Some(args.sub.clone()),
        roles: args.roles.clone(),
        scopes: args.scopes.clone(),
        ttl: Some(ttl),
        claims,
        ..TokenSpec::default()
    };
    match mint(&loaded, &spec, now()) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(USAGE)
        }
    }
}
