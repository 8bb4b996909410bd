//! A request described on the command line or in a cases file, turned into
//! the facts the engine takes.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portcullis_core::{Decision, Engine, Rendered, RequestFacts, render};

use crate::bans::BanBook;
use crate::limits::Limiter;

/// An owned request, to borrow facts from.
#[derive(Debug)]
pub struct OwnedRequest {
    pub method: Method,
    pub target: String,
    pub headers: HeaderMap,
    pub ip: IpAddr,
}

impl OwnedRequest {
    /// Build from parts; each header is `Name: value`.
    pub fn new(
        method: &str,
        target: &str,
        headers: &[(String, String)],
        token: Option<&str>,
        ip: &str,
    ) -> Result<Self, String> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not a method"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("{name:?} is not a header name"))?;
            let v = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("the value of {name} is not a valid header value"))?;
            map.append(n, v);
        }
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| "the token is not a valid header value".to_owned())?;
            map.append(http::header::AUTHORIZATION, v);
        }
        Ok(OwnedRequest {
            method,
            target: target.to_owned(),
            headers: map,
            ip,
        })
    }

    /// The facts at time `now`.
    pub fn facts(&self, now: i64) -> RequestFacts<'_> {
        RequestFacts {
            method: &self.method,
            target: &self.target,
            headers: &self.headers,
            peer: self.ip,
            now,
        }
    }

    /// Decide at `now` (Unix seconds), look the bans up in `bans`, count
    /// the rate limits in `limiter`, and render a denial with the request
    /// id `id`: what `explain` and `test` show for one request.
    pub fn decide(
        &self,
        engine: &Engine,
        limiter: &Limiter,
        bans: &BanBook,
        now: i64,
        id: &str,
    ) -> (Decision, Option<Rendered>) {
        let mut decision = engine.decide(&self.facts(now));
        let now_ms = u64::try_from(now).unwrap_or(0).saturating_mul(1000);
        if let Some(rules) = engine.bans() {
            bans.check_offline(rules, &mut decision, now_ms);
        }
        let limit_headers = limiter.apply_offline(&mut decision, now_ms);
        let response = decision.denial().map(|d| {
            let mut r = render(&d.face, self.accept(), id);
            r.headers.extend(limit_headers);
            r
        });
        (decision, response)
    }

    /// The `Accept` value, for rendering.
    pub fn accept(&self) -> Option<&str> {
        self.headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
    }
}

/// Split `Name: value` strings.
pub fn split_headers(raw: &[String]) -> Result<Vec<(String, String)>, String> {
    raw.iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("header {h:?}: write it as 'Name: value'"))
        })
        .collect()
}
