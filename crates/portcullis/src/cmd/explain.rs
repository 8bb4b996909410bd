//! `portcullis explain`: one request through the engine, every stage shown.

use std::process::ExitCode;

use super::{load_with_keys, now, usage};
use crate::bans::BanBook;
use crate::limits::Limiter;
use crate::request::{OwnedRequest, split_headers};
use crate::{ExplainArgs, Format, report};

pub fn run(args: &ExplainArgs) -> ExitCode {
    let loaded = match load_with_keys(&args.config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let headers = match split_headers(&args.headers) {
        Ok(h) => h,
        Err(e) => return usage(e),
    };
    let req = match OwnedRequest::new(
        &args.method,
        &args.path,
        &headers,
        args.token.as_deref(),
        &args.ip,
    ) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let at = args.now.unwrap_or_else(now);
    // A fresh store: one request never exhausts a limit, but the response
    // shows the headers it would carry.
    let limiter = Limiter::in_memory(16);
    // Bans shared through Redis are looked up there: a ban in force shows.
    // Bans in a gateway's memory are not visible from here.
    let bans = BanBook::configured(&loaded.rate_limit_store, &loaded.ban_key_prefix)
        .unwrap_or_else(|_| BanBook::in_memory(16));
    let (decision, response) = req.decide(&loaded.engine, &limiter, &bans, at, "explain");
    match args.format {
        Format::Json => println!("{:#}", report::decision_json(&decision, response.as_ref())),
        Format::Text => print!("{}", report::decision_text(&decision, response.as_ref())),
    }
    ExitCode::SUCCESS
}
