//! `portcullis test`: a table of request -> expected outcome, run through the
//! engine, so policy changes are tested like code. Prints each failure with
//! its trace and ends with `N passed, M failed`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use portcullis_config::diag::{ConfigError, Source};
use portcullis_config::{LoadError, Loaded};
use portcullis_core::{Decision, Rendered, render};
use serde::Deserialize;
use toml::Spanned;

use super::{FAILED, load_with_keys, now};
use crate::bans::BanBook;
use crate::limits::Limiter;
use crate::report;
use crate::request::OwnedRequest;
use portcullis_config::mint::{TokenSpec, mint};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(rename = "case", default)]
    cases: Vec<Spanned<Case>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default = "localhost")]
    ip: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    token: Option<TokenSpec>,
    raw_token: Option<String>,
    /// `allow` or `deny`.
    expect: Option<String>,
    status: Option<u16>,
    error: Option<String>,
    message: Option<String>,
    /// Response headers that must be present with exactly these values.
    #[serde(default)]
    response_headers: BTreeMap<String, String>,
    /// Another request whose response must be identical (but for the request id).
    same_as: Option<Reference>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reference {
    #[serde(default = "get")]
    method: String,
    path: String,
}

fn get() -> String {
    "GET".to_owned()
}

fn localhost() -> String {
    "127.0.0.1".to_owned()
}

pub fn run(config: &Path, cases_path: &Path, at: Option<i64>) -> ExitCode {
    let loaded = match load_with_keys(config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let cases = match read_cases(cases_path) {
        Ok(c) => c,
        Err(e) => {
            report::print_load_error(&e);
            return ExitCode::from(FAILED);
        }
    };
    let now = at.unwrap_or_else(now);
    // One store for the whole table: cases count against rate limits in
    // order, as requests arriving at the same moment would.
    // Bans likewise: a case's answer is a strike, and may ban the next.
    let limiter = Limiter::in_memory(100_000);
    let bans = BanBook::in_memory(100_000);
    let (mut passed, mut failed) = (0, 0);
    for case in &cases.cases {
        let case = case.get_ref();
        match run_case(&loaded, &limiter, &bans, case, now) {
            Ok(()) => {
                passed += 1;
                println!("ok   {}", case.name);
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {}\n{}", case.name, indent(&why));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    }
}

fn read_cases(path: &Path) -> Result<CasesFile, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read the cases: {e}")))?;
    let src = Source::new(path, text);
    let file: CasesFile = toml::from_str(&src.text).map_err(|e| {
        ConfigError::at(
            &src,
            e.span().unwrap_or(0..0),
            e.message().trim().to_owned(),
        )
    })?;
    for c in &file.cases {
        let case = c.get_ref();
        let expects_deny = case.status.is_some() || case.error.is_some() || case.message.is_some();
        match case.expect.as_deref() {
            None if !expects_deny => {
                return Err(ConfigError::at(
                    &src,
                    c.span(),
                    format!("case {:?} expects nothing", case.name),
                )
                .help("add expect = \"allow\", or status = <code>")
                .into());
            }
            Some("allow") if expects_deny => {
                return Err(ConfigError::at(
                    &src,
                    c.span(),
                    format!("case {:?} expects allow and a denial", case.name),
                )
                .into());
            }
            Some(other) if other != "allow" && other != "deny" => {
                return Err(ConfigError::at(
                    &src,
                    c.span(),
                    format!("expect = {other:?}: use \"allow\" or \"deny\""),
                )
                .into());
            }
            _ => {}
        }
    }
    if file.cases.is_empty() {
        return Err(ConfigError::file(path, "no [[case]] tables").into());
    }
    Ok(file)
}

fn request(loaded: &Loaded, case: &Case, now: i64) -> Result<OwnedRequest, String> {
    let token = match (&case.token, &case.raw_token) {
        (Some(spec), None) => Some(mint(loaded, spec, now)?),
        (None, Some(raw)) => Some(raw.clone()),
        (None, None) => None,
        (Some(_), Some(_)) => return Err("give token or raw_token, not both".to_owned()),
    };
    let headers: Vec<(String, String)> = case
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    OwnedRequest::new(
        &case.method,
        &case.path,
        &headers,
        token.as_deref(),
        &case.ip,
    )
}

fn run_case(
    loaded: &Loaded,
    limiter: &Limiter,
    bans: &BanBook,
    case: &Case,
    now: i64,
) -> Result<(), String> {
    let req = request(loaded, case, now)?;
    let (decision, response) = req.decide(&loaded.engine, limiter, bans, now, "test");
    if let Some(rules) = loaded.engine.bans() {
        let status = response.as_ref().map_or(200, |r| r.status);
        let now_ms = u64::try_from(now).unwrap_or(0).saturating_mul(1000);
        bans.strike_offline(rules, &decision, status, now_ms);
    }
    let mut problems = Vec::new();
    check(case, &decision, response.as_ref(), &mut problems);
    if let Some(reference) = &case.same_as {
        let other = OwnedRequest::new(&reference.method, &reference.path, &[], None, &case.ip)?;
        let other_decision = loaded.engine.decide(&other.facts(now));
        let other_response = other_decision
            .denial()
            .map(|d| render(&d.face, req.accept(), "test"));
        if response != other_response {
            problems.push(format!(
                "response differs from {} {}:\n  got      {:?}\n  expected {:?}",
                reference.method, reference.path, response, other_response
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            problems.join("\n"),
            report::decision_text(&decision, response.as_ref())
        ))
    }
}

fn check(case: &Case, d: &Decision, response: Option<&Rendered>, problems: &mut Vec<String>) {
    let allowed = d.is_allowed();
    let want_allow = case.expect.as_deref() == Some("allow");
    if want_allow != allowed {
        problems.push(format!(
            "expected {}, got {}",
            if want_allow { "allow" } else { "deny" },
            if allowed { "allow" } else { "deny" }
        ));
        return;
    }
    let Some(den) = d.denial() else {
        return;
    };
    if let Some(s) = case.status.filter(|s| *s != den.face.status) {
        problems.push(format!("expected status {s}, got {}", den.face.status));
    }
    if let Some(e) = case.error.as_ref().filter(|e| **e != den.face.code) {
        problems.push(format!("expected error {e:?}, got {:?}", den.face.code));
    }
    if let Some(m) = case.message.as_ref().filter(|m| **m != den.face.message) {
        problems.push(format!(
            "expected message {m:?}, got {:?}",
            den.face.message
        ));
    }
    for (name, want) in &case.response_headers {
        let got = response.and_then(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        });
        if got != Some(want.as_str()) {
            problems.push(format!("expected header {name}: {want:?}, got {got:?}"));
        }
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
