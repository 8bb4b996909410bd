//! How the CLI shows things: configuration diagnostics (miette, with file,
//! line and column), and decisions as text or JSON.

use portcullis_config::LoadError;

use crate::limits::shown_key;
use portcullis_core::{Decision, Rendered, Verdict};
use serde_json::{Value, json};

/// Render diagnostics with source excerpts, without colour when not on a terminal.
pub fn install_error_hook() {
    let _ = miette::set_hook(Box::new(|_| {
        let theme = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        Box::new(miette::GraphicalReportHandler::new_themed(theme).with_context_lines(2))
    }));
}

/// Print every error of a failed load.
pub fn print_load_error(e: &LoadError) {
    let handler = miette::GraphicalReportHandler::new_themed(
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        },
    );
    for err in &e.errors {
        let mut out = String::new();
        if handler.render_report(&mut out, err).is_err() {
            out = err.to_string();
        }
        eprintln!("{out}");
    }
    let n = e.errors.len();
    eprintln!(
        "{n} error{} in the configuration",
        if n == 1 { "" } else { "s" }
    );
}

/// The decision as JSON (the `explain --format json` shape).
pub fn decision_json(d: &Decision, response: Option<&Rendered>) -> Value {
    let trace: Vec<Value> = d
        .describe()
        .into_iter()
        .map(|(stage, outcome, detail)| json!({"stage": stage.as_str(), "outcome": outcome, "detail": detail}))
        .collect();
    let identity = d.identity.as_ref().map(|i| {
        json!({"subject": i.subject, "roles": i.roles, "scopes": i.scopes, "method": i.method.as_str()})
    });
    let mut v = json!({
        "decision": if d.is_allowed() { "allow" } else { "deny" },
        "status": Value::Null,
        "error": Value::Null,
        "message": Value::Null,
        "reason": Value::Null,
        "stage": d.stage().map(|s| s.as_str()),
        "method": d.method.as_str(),
        "peer": d.peer.to_string(),
        "client": d.client.map(|c| c.to_string()),
        "country": d.country.map(|c| c.as_str().to_owned()),
        "ban_keys": d.ban_keys,
        "path": d.path,
        "query": d.query,
        "route": d.route.as_ref().map(|r| r.name.to_string()),
        "params": d.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "identity": identity,
        "principal": d.principal.as_ref().map(ToString::to_string),
        "action": d.action.as_ref().map(ToString::to_string),
        "resource": d.resource.as_ref().map(ToString::to_string),
        "policies": Value::Null,
        "hint": Value::Null,
        "rate_limits": d.limits.iter().map(|c| json!({
            "name": &*c.spec.name,
            "limit": c.spec.limit,
            "period_ms": c.spec.period_ms,
            "key": shown_key(&c.key),
        })).collect::<Vec<_>>(),
        "rules_logged": d.rules_logged.iter().map(|r| &**r).collect::<Vec<_>>(),
        "trace": trace,
    });
    match &d.verdict {
        Verdict::Allow { policies } => {
            v["policies"] = json!(policies.iter().map(AsRef::as_ref).collect::<Vec<&str>>())
        }
        Verdict::Deny(den) => {
            v["status"] = json!(den.face.status);
            v["error"] = json!(den.face.code);
            v["message"] = json!(den.face.message);
            v["reason"] = json!(den.reason.as_str());
            v["policies"] = json!(
                den.policies
                    .iter()
                    .map(AsRef::as_ref)
                    .collect::<Vec<&str>>()
            );
            v["hint"] = json!(den.hint);
            if let Some(real) = &den.concealed {
                v["concealed"] =
                    json!({"status": real.status, "error": real.code, "message": real.message});
            }
        }
    }
    if let Some(r) = response {
        let headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        v["response"] = json!({"status": r.status, "headers": headers, "body": r.body});
    }
    v
}

/// The decision as readable text.
pub fn decision_text(d: &Decision, response: Option<&Rendered>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} {}\n",
        d.method,
        d.path.as_deref().unwrap_or("(unparsed)")
    ));
    for (stage, outcome, detail) in d.describe() {
        out.push_str(&format!("  {:<13} {outcome:<5} {detail}\n", stage.as_str()));
    }
    match &d.verdict {
        Verdict::Allow { policies } => {
            out.push_str(&format!(
                "decision: allow (policies: {})\n",
                policies.join(", ")
            ));
        }
        Verdict::Deny(den) => {
            out.push_str(&format!(
                "decision: deny at {} -> {} {} ({})\n",
                den.stage, den.face.status, den.face.code, den.reason
            ));
            if let Some(real) = &den.concealed {
                out.push_str(&format!(
                    "concealed: the route hides a {} {} as a 404\n",
                    real.status, real.code
                ));
            }
            if !den.policies.is_empty() {
                out.push_str(&format!("policies: {}\n", den.policies.join(", ")));
            }
            out.push_str(&format!("hint: {}\n", den.hint));
        }
    }
    if let Some(c) = d.country {
        out.push_str(&format!("country: {c}\n"));
    }
    if !d.ban_keys.is_empty() {
        out.push_str(&format!(
            "bans: looked up under {}\n",
            d.ban_keys.join(", ")
        ));
    }
    for check in &d.limits {
        out.push_str(&format!(
            "rate limit: \"{}\" ({} per {} s), counted under {}\n",
            check.spec.name,
            check.spec.limit,
            check.spec.period_ms as f64 / 1000.0,
            shown_key(&check.key)
        ));
    }
    if let Some(r) = response {
        out.push_str(&format!("response: {}\n", r.status));
        for (k, v) in &r.headers {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out.push_str(&format!("  {}\n", r.body.trim_end().replace('\n', "\n  ")));
    }
    out
}
