//! `portcullis explain`: one request through the engine, every stage shown.

use std::process::ExitCode;

use portcullis_core::render;

use super::{load_with_keys, now, usage};
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
    let decision = loaded
        .engine
        .decide(&req.facts(args.now.unwrap_or_else(now)));
    let response = decision
        .denial()
        .map(|d| render(&d.face, req.accept(), "explain"));
    match args.format {
        Format::Json => println!("{:#}", report::decision_json(&decision, response.as_ref())),
        Format::Text => print!("{}", report::decision_text(&decision, response.as_ref())),
    }
    ExitCode::SUCCESS
}
