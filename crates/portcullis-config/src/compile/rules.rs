//! Stage two for request rules: each `[[request_rule]]` checked and its
//! regexes compiled once; a bad regex fails the load at its line.

use std::collections::HashMap;
use std::ops::Range;

use http::HeaderName;
use portcullis_core::normalize::normalize_path;
use portcullis_core::route::Methods;
use portcullis_core::rules::{Matcher, RuleSpec, Rules};
use regex::RegexBuilder;
use toml::Spanned;

use super::Ctx;
use crate::diag::ConfigError;
use crate::raw::{RawConfig, RawRule};

/// Compile every rule, collecting every error.
pub(crate) fn compile(ctx: &Ctx, raw: &RawConfig) -> Result<Rules, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut specs = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in &raw.request_rules {
        let id = r.get_ref().id.get_ref().as_str();
        if let Some(first) = seen.insert(id, r.get_ref().id.span().start) {
            errors.push(
                ctx.err(
                    r.get_ref().id.span(),
                    format!("rule id {id:?} is used twice"),
                )
                .help(format!("the first is at {}", ctx.src.location(first))),
            );
        }
        match one(ctx, r) {
            Ok(s) => specs.push(s),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Rules::new(specs).map_err(|e| {
        let span = raw.request_rules.first().map_or(0..0, Spanned::span);
        vec![
            ctx.err(span, e)
                .help("use fewer or simpler regexes, or prefixes"),
        ]
    })
}

fn one(ctx: &Ctx, raw: &Spanned<RawRule>) -> Result<RuleSpec, Vec<ConfigError>> {
    let r = raw.get_ref();
    let mut errors = Vec::new();
    // The routes' own method rules: case-sensitive, and GET implies HEAD
    // (a rule on GET that HEAD escaped would protect nothing).
    let methods = match &r.methods {
        None => Methods::Any,
        Some(m) => super::routes::methods(ctx, m).unwrap_or_else(|e| {
            errors.push(e);
            Methods::Any
        }),
    };
    // Paths are matched against the canonical path: a literal that
    // normalisation would change could never match, and the rule would
    // fail open without a word.
    if let Some(m) = &r.path {
        for lit in [&m.get_ref().exact, &m.get_ref().prefix]
            .into_iter()
            .flatten()
        {
            match normalize_path(lit) {
                Ok(canon) if canon == *lit => {}
                Ok(canon) => errors.push(
                    ctx.err(m.span(), format!("{lit:?} is not a canonical path"))
                        .help(format!("rules see canonical paths: write {canon:?}")),
                ),
                Err(e) => errors.push(ctx.err(
                    m.span(),
                    format!("{lit:?} is not a path a request can have: {e}"),
                )),
            }
        }
    }
    let mut matcher = |span: Range<usize>,
                       exact: &Option<String>,
                       prefix: &Option<String>,
                       regex: &Option<String>| {
        match (exact, prefix, regex) {
            (Some(e), None, None) => Some(Matcher::Exact(e.clone())),
            (None, Some(p), None) => Some(Matcher::Prefix(p.clone())),
            (None, None, Some(re)) => match RegexBuilder::new(re).size_limit(1 << 20).build() {
                Ok(compiled) => Some(Matcher::Regex(compiled)),
                Err(e) => {
                    errors.push(ctx.err(span, format!("the regex does not compile: {e}")));
                    None
                }
            },
            _ => {
                errors.push(ctx.err(span, "give exactly one of exact, prefix and regex"));
                None
            }
        }
    };
    let path = r.path.as_ref().and_then(|m| {
        matcher(
            m.span(),
            &m.get_ref().exact,
            &m.get_ref().prefix,
            &m.get_ref().regex,
        )
    });
    let user_agent = r.user_agent.as_ref().and_then(|m| {
        matcher(
            m.span(),
            &m.get_ref().exact,
            &m.get_ref().prefix,
            &m.get_ref().regex,
        )
    });
    let header_match = r.header.as_ref().and_then(|m| {
        matcher(
            m.span(),
            &m.get_ref().exact,
            &m.get_ref().prefix,
            &m.get_ref().regex,
        )
    });
    let query_match = r.query.as_ref().and_then(|m| {
        matcher(
            m.span(),
            &m.get_ref().exact,
            &m.get_ref().prefix,
            &m.get_ref().regex,
        )
    });
    let header = match (&r.header, header_match) {
        (Some(h), Some(m)) => match HeaderName::from_bytes(h.get_ref().name.get_ref().as_bytes()) {
            Ok(name) => Some((name, m)),
            Err(_) => {
                errors.push(ctx.err(h.get_ref().name.span(), "not a header name"));
                None
            }
        },
        _ => None,
    };
    let query = match (&r.query, query_match) {
        (Some(q), Some(m)) => Some((q.get_ref().name.get_ref().clone(), m)),
        _ => None,
    };
    let block = match r.action.as_ref().map(|a| (a, a.get_ref().as_str())) {
        None | Some((_, "block")) => true,
        Some((_, "log")) => false,
        Some((a, other)) => {
            errors.push(ctx.err(a.span(), format!("{other:?}: use \"block\" or \"log\"")));
            true
        }
    };
    let conditions = [
        r.path.is_some(),
        r.user_agent.is_some(),
        r.header.is_some(),
        r.query.is_some(),
    ];
    if !conditions.contains(&true) {
        errors.push(
            ctx.err(
                raw.span(),
                format!("rule {:?} has no condition", r.id.get_ref()),
            )
            .help("give at least one of path, user_agent, header and query"),
        );
    }
    if errors.is_empty() {
        Ok(RuleSpec {
            id: r.id.get_ref().as_str().into(),
            methods,
            path,
            user_agent,
            header,
            query,
            block,
            message: r.message.clone(),
        })
    } else {
        Err(errors)
    }
}
