//! Stage 6: request rules (a small WAF). Each rule names conditions on the
//! method, the canonical path, the User-Agent, a header or a query
//! parameter; a rule matches when all of its conditions do. The first
//! matching blocking rule refuses the request (403 `UserAgentBlocked` when
//! the rule looks only at the User-Agent, else `RequestBlocked`); a rule in
//! log mode only records that it would have. Regexes are compiled once, and
//! all User-Agent and path regexes are matched together by one regex set
//! per request.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

use crate::route::Methods;
use regex::{Regex, RegexSet, RegexSetBuilder};

/// How a value is matched.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Anywhere (`regex` syntax); compiled at load.
    Regex(Regex),
}

impl Matcher {
    fn is_match(&self, v: &str) -> bool {
        match self {
            Matcher::Exact(e) => v == e,
            Matcher::Prefix(p) => v.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(v),
        }
    }
}

/// A rule as configured.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Its id (the rule named in decisions and logs).
    pub id: Arc<str>,
    /// Methods it applies to (GET implies HEAD, as for routes).
    pub methods: Methods,
    /// The canonical path.
    pub path: Option<Matcher>,
    /// The `User-Agent` (a request without one matches against "").
    pub user_agent: Option<Matcher>,
    /// A header's values (any one matching suffices).
    pub header: Option<(HeaderName, Matcher)>,
    /// A query parameter's values, as sent (any one matching suffices).
    pub query: Option<(String, Matcher)>,
    /// Refuse (false: only log that it would have).
    pub block: bool,
    /// The client-facing message.
    pub message: Option<String>,
}

/// The compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<RuleSpec>,
    /// User-Agent regexes of all rules, and the rule each belongs to.
    ua_set: Option<(RegexSet, Vec<usize>)>,
    /// Path regexes of all rules, and the rule each belongs to.
    path_set: Option<(RegexSet, Vec<usize>)>,
}

/// What the rules concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleOutcome {
    /// The blocking rule that matched first.
    pub blocked_by: Option<Blocked>,
    /// Log-mode rules that matched ("would have blocked").
    pub logged: Vec<Arc<str>>,
}

/// A refusal by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The rule.
    pub id: Arc<str>,
    /// Whether it looked at the User-Agent alone.
    pub user_agent_only: bool,
    /// Its message.
    pub message: Option<String>,
}

impl Rules {
    /// Compile `rules` (whose regexes are each valid) into the combined
    /// sets. Fails if a set grows past its size limit: rules that silently
    /// stopped matching would fail open.
    pub fn new(rules: Vec<RuleSpec>) -> Result<Self, String> {
        let set = |pick: &dyn Fn(&RuleSpec) -> Option<&Matcher>| {
            let mut patterns = Vec::new();
            let mut owners = Vec::new();
            for (i, r) in rules.iter().enumerate() {
                if let Some(Matcher::Regex(re)) = pick(r) {
                    patterns.push(re.as_str().to_owned());
                    owners.push(i);
                }
            }
            if patterns.is_empty() {
                return Ok(None);
            }
            RegexSetBuilder::new(&patterns)
                .size_limit(64 << 20)
                .build()
                .map(|s| Some((s, owners)))
                .map_err(|e| format!("the rules' regexes together are too large: {e}"))
        };
        let ua_set = set(&|r| r.user_agent.as_ref())?;
        let path_set = set(&|r| r.path.as_ref())?;
        Ok(Rules {
            rules,
            ua_set,
            path_set,
        })
    }

    /// Whether there is anything to check.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Check one request.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> RuleOutcome {
        // Every User-Agent line counts (a second one must not hide a
        // scanner), read lossily: bytes outside ASCII must not make it "".
        let mut agents: Vec<String> = headers
            .get_all(http::header::USER_AGENT)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if agents.is_empty() {
            agents.push(String::new());
        }
        let hits = |set: &Option<(RegexSet, Vec<usize>)>, values: &[&str]| -> Vec<usize> {
            set.as_ref().map_or_else(Vec::new, |(s, owners)| {
                values
                    .iter()
                    .flat_map(|v| s.matches(v).into_iter().map(|i| owners[i]))
                    .collect()
            })
        };
        let agents: Vec<&str> = agents.iter().map(String::as_str).collect();
        let ua_hits = hits(&self.ua_set, &agents);
        let path_hits = hits(&self.path_set, &[path]);
        let mut out = RuleOutcome::default();
        for (i, r) in self.rules.iter().enumerate() {
            let field = |m: &Option<Matcher>, values: &[&str], hits: &[usize]| match m {
                None => true,
                Some(Matcher::Regex(_)) => hits.contains(&i),
                Some(m) => values.iter().any(|v| m.is_match(v)),
            };
            let matched = r.methods.contains(method)
                && field(&r.user_agent, &agents, &ua_hits)
                && field(&r.path, &[path], &path_hits)
                && r.header.as_ref().is_none_or(|(name, m)| {
                    headers
                        .get_all(name)
                        .iter()
                        .any(|v| m.is_match(&String::from_utf8_lossy(v.as_bytes())))
                })
                && r.query
                    .as_ref()
                    .is_none_or(|(name, m)| query_values(query, name).any(|v| m.is_match(&v)));
            if !matched {
                continue;
            }
            if !r.block {
                out.logged.push(Arc::clone(&r.id));
            } else if out.blocked_by.is_none() {
                out.blocked_by = Some(Blocked {
                    id: Arc::clone(&r.id),
                    user_agent_only: r.user_agent.is_some()
                        && r.path.is_none()
                        && r.header.is_none()
                        && r.query.is_none()
                        && r.methods == Methods::Any,
                    message: r.message.clone(),
                });
            }
        }
        out
    }
}

/// Values of `name` in a query string, decoded as a form would be (`+`
/// and percent escapes), so `?de%62ug=%31` is the `debug=1` the upstream
/// will read.
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = String> + 'q {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            methods: Methods::Any,
            path: None,
            user_agent: None,
            header: None,
            query: None,
            block: true,
            message: None,
        }
    }

    fn ua(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::USER_AGENT, v.parse().unwrap());
        h
    }

    #[test]
    fn all_conditions_of_a_rule_must_match() {
        let rules = Rules::new(vec![
            RuleSpec {
                user_agent: Some(Matcher::Regex(Regex::new("(?i)sqlmap").unwrap())),
                ..rule("sqlmap")
            },
            RuleSpec {
                methods: Methods::only(vec![Method::POST]),
                path: Some(Matcher::Prefix("/admin".into())),
                query: Some(("debug".into(), Matcher::Exact("1".into()))),
                ..rule("admin-debug")
            },
            RuleSpec {
                path: Some(Matcher::Regex(Regex::new(r"\.(git|env)(/|$)").unwrap())),
                block: false,
                ..rule("dotfiles")
            },
        ])
        .unwrap();
        let get = Method::GET;
        let out = rules.check(&get, "/public", None, &ua("SQLMap/1.7"));
        assert_eq!(out.blocked_by.unwrap().id.as_ref(), "sqlmap");
        assert!(
            rules
                .check(&get, "/public", None, &ua("curl/8"))
                .blocked_by
                .is_none()
        );
        let post = Method::POST;
        let none = HeaderMap::new();
        assert!(
            rules
                .check(&post, "/admin/x", Some("a=1&debug=1"), &none)
                .blocked_by
                .is_some()
        );
        assert!(
            rules
                .check(&post, "/admin/x", Some("debug=2"), &none)
                .blocked_by
                .is_none()
        );
        // Encoded forms of the same parameter match too.
        assert!(
            rules
                .check(&post, "/admin/x", Some("de%62ug=%31"), &none)
                .blocked_by
                .is_some()
        );
        assert!(
            rules
                .check(&get, "/admin/x", Some("debug=1"), &none)
                .blocked_by
                .is_none()
        );
        // Method and query right, path wrong.
        assert!(
            rules
                .check(&post, "/public/x", Some("debug=1"), &none)
                .blocked_by
                .is_none()
        );
        let logged = rules.check(&get, "/x/.git/config", None, &none);
        assert!(logged.blocked_by.is_none());
        assert_eq!(logged.logged, vec![Arc::<str>::from("dotfiles")]);
    }

    #[test]
    fn head_is_covered_by_get_and_every_user_agent_line_counts() {
        let rules = Rules::new(vec![
            RuleSpec {
                methods: Methods::only(vec![Method::GET]),
                path: Some(Matcher::Prefix("/admin".into())),
                ..rule("admin")
            },
            RuleSpec {
                user_agent: Some(Matcher::Regex(Regex::new("(?i)sqlmap").unwrap())),
                ..rule("sqlmap")
            },
            RuleSpec {
                user_agent: Some(Matcher::Prefix("curl/".into())),
                ..rule("curl")
            },
        ])
        .unwrap();
        let none = HeaderMap::new();
        let head = rules.check(&Method::HEAD, "/admin/x", None, &none);
        assert_eq!(head.blocked_by.unwrap().id.as_ref(), "admin");
        for (agents, id) in [
            (["Mozilla/5.0", "sqlmap/1.7"], "sqlmap"),
            (["sqlmap/1.7", "Mozilla/5.0"], "sqlmap"),
            (["Mozilla/5.0", "curl/8.0"], "curl"),
            (["curl/8.0", "Mozilla/5.0"], "curl"),
        ] {
            let mut h = HeaderMap::new();
            for a in agents {
                h.append(http::header::USER_AGENT, a.parse().unwrap());
            }
            let got = rules.check(&Method::GET, "/", None, &h).blocked_by;
            assert_eq!(got.map(|b| b.id), Some(Arc::from(id)), "{agents:?}");
        }
        let mut odd = HeaderMap::new();
        odd.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_bytes(b"sqlmap\xff").unwrap(),
        );
        assert!(
            rules
                .check(&Method::GET, "/", None, &odd)
                .blocked_by
                .is_some()
        );
    }

    #[test]
    fn user_agent_only_rules_are_told_apart() {
        let rules = Rules::new(vec![
            RuleSpec {
                user_agent: Some(Matcher::Exact(String::new())),
                ..rule("no-ua")
            },
            RuleSpec {
                user_agent: Some(Matcher::Prefix("bot".into())),
                path: Some(Matcher::Prefix("/admin".into())),
                ..rule("bot-admin")
            },
            RuleSpec {
                methods: Methods::only(vec![Method::POST]),
                user_agent: Some(Matcher::Prefix("crawler".into())),
                ..rule("crawler-post")
            },
        ])
        .unwrap();
        let b = rules
            .check(&Method::GET, "/", None, &HeaderMap::new())
            .blocked_by
            .unwrap();
        assert!(b.user_agent_only);
        // With a path or a method as well, it is a request rule.
        let b = rules
            .check(&Method::GET, "/admin/x", None, &ua("bot/1"))
            .blocked_by
            .unwrap();
        assert_eq!((b.id.as_ref(), b.user_agent_only), ("bot-admin", false));
        let b = rules
            .check(&Method::POST, "/", None, &ua("crawler/2"))
            .blocked_by
            .unwrap();
        assert_eq!((b.id.as_ref(), b.user_agent_only), ("crawler-post", false));
    }
}
