//! Stage two for what `serve` needs besides the engine: the listener and its
//! limits, the upstream, the identity headers and the decision log. Every
//! value is checked here, so the server never meets an unparsed setting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use portcullis_core::client::{ClientAddressPolicy, ClientHeader};
use toml::Spanned;

use super::Ctx;
use crate::diag::ConfigError;
use crate::duration::parse_bytes;
use crate::raw::{RawConfig, RawDuration, RawServer, RawSize, RawUpstream};
use crate::{
    DecisionLog, IdentityHeaders, Limits, Server, StaticSite, TlsFiles, Upstream, UrlUpstream,
};

/// Everything `serve` reads, compiled.
pub(crate) struct Serving {
    pub server: Server,
    pub upstream: Option<Upstream>,
    pub identity_headers: IdentityHeaders,
    pub decision_log: DecisionLog,
    pub route_max_body: HashMap<String, u64>,
    pub client: ClientAddressPolicy,
}

/// Compile the serving sections, collecting every error.
pub(crate) fn compile(ctx: &Ctx, raw: &RawConfig) -> Result<Serving, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let server = server(ctx, &raw.server, &mut errors);
    let client = client_policy(ctx, &raw.server, &server.trusted_proxies, &mut errors);
    let upstream = match raw.upstream.as_ref().map(|u| upstream(ctx, u)).transpose() {
        Ok(u) => u,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let identity_headers = identity_headers(ctx, raw.upstream.as_ref(), &mut errors);
    let decision_log = decision_log(ctx, raw, &mut errors);
    let mut route_max_body = HashMap::new();
    for r in &raw.routes {
        let r = r.get_ref();
        if let Some(n) = r.max_body.as_ref().and_then(|s| bytes(ctx, s, &mut errors)) {
            route_max_body.insert(r.name.get_ref().clone(), n);
        }
    }
    if errors.is_empty() {
        Ok(Serving {
            server,
            upstream,
            identity_headers,
            decision_log,
            route_max_body,
            client,
        })
    } else {
        Err(errors)
    }
}

fn server(ctx: &Ctx, raw: &RawServer, errors: &mut Vec<ConfigError>) -> Server {
    let defaults = Limits::default();
    let mut limits = Limits {
        max_connections: raw
            .max_connections
            .as_ref()
            .map_or(defaults.max_connections, |v| *v.get_ref()),
        max_headers: raw
            .max_headers
            .as_ref()
            .map_or(defaults.max_headers, |v| *v.get_ref()),
        ..defaults
    };
    let size = |v: &Option<Spanned<RawSize>>, errors: &mut Vec<ConfigError>| {
        v.as_ref().and_then(|v| bytes(ctx, v, errors))
    };
    if let Some(n) = size(&raw.max_header_bytes, errors) {
        limits.max_header_bytes = usize::try_from(n).unwrap_or(usize::MAX);
    }
    match size(&raw.max_uri_bytes, errors) {
        Some(n) => limits.max_uri_bytes = usize::try_from(n).unwrap_or(usize::MAX),
        // Unset, the URI limit follows a lowered header limit down.
        None => limits.max_uri_bytes = limits.max_uri_bytes.min(limits.max_header_bytes),
    }
    if let Some(n) = size(&raw.max_body, errors) {
        limits.max_body = n;
    }
    check_limits(ctx, raw, &limits, errors);
    let time = |v: &Option<Spanned<RawDuration>>, default: u64, errors: &mut Vec<ConfigError>| {
        v.as_ref()
            .and_then(|v| duration(ctx, v, errors))
            .unwrap_or(Duration::from_secs(default))
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .filter_map(|c| cidr(ctx, c).map_err(|e| errors.push(e)).ok())
        .collect();
    let tls = raw.tls.as_ref().and_then(|t| {
        let t = t.get_ref();
        let cert = existing_file(ctx, &t.cert).map_err(|e| errors.push(e)).ok();
        let key = existing_file(ctx, &t.key).map_err(|e| errors.push(e)).ok();
        Some(TlsFiles {
            cert: cert?,
            key: key?,
        })
    });
    Server {
        listen: raw
            .listen
            .as_ref()
            .and_then(|l| address(ctx, l).map_err(|e| errors.push(e)).ok()),
        admin_listen: raw
            .admin_listen
            .as_ref()
            .and_then(|l| address(ctx, l).map_err(|e| errors.push(e)).ok()),
        tls,
        trusted_proxies,
        limits,
        header_read_timeout: time(&raw.header_read_timeout, 10, errors),
        idle_timeout: time(&raw.idle_timeout, 60, errors),
        shutdown_timeout: time(&raw.shutdown_timeout, 30, errors),
    }
}

fn client_policy(
    ctx: &Ctx,
    raw: &RawServer,
    trusted: &[IpNet],
    errors: &mut Vec<ConfigError>,
) -> ClientAddressPolicy {
    let header = match &raw.client_ip_header {
        None => ClientHeader::XForwardedFor,
        Some(h) if trusted.is_empty() && raw.trusted_proxies.is_empty() => {
            errors.push(
                ctx.err(
                    h.span(),
                    "client_ip_header is only read from trusted proxies, and none are listed",
                )
                .help("add trusted_proxies = [\"10.0.0.0/8\"] (your proxies' addresses)"),
            );
            ClientHeader::XForwardedFor
        }
        Some(h) => match HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
            Ok(n) if n == "x-forwarded-for" => ClientHeader::XForwardedFor,
            Ok(n) if n == "forwarded" => ClientHeader::Forwarded,
            Ok(n) => ClientHeader::Single(n),
            Err(_) => {
                errors.push(ctx.err(h.span(), "not a header name"));
                ClientHeader::XForwardedFor
            }
        },
    };
    ClientAddressPolicy::new(trusted.to_vec(), header)
}

fn check_limits(ctx: &Ctx, raw: &RawServer, l: &Limits, errors: &mut Vec<ConfigError>) {
    let span = |v: Option<std::ops::Range<usize>>| v.unwrap_or(0..0);
    if l.max_connections == 0 {
        errors.push(ctx.err(
            span(raw.max_connections.as_ref().map(Spanned::span)),
            "max_connections must be at least 1",
        ));
    }
    if l.max_headers == 0 || l.max_headers > 1000 {
        errors.push(ctx.err(
            span(raw.max_headers.as_ref().map(Spanned::span)),
            "max_headers must be between 1 and 1000",
        ));
    }
    if !(1024..=1 << 20).contains(&l.max_header_bytes) {
        errors.push(ctx.err(
            span(raw.max_header_bytes.as_ref().map(Spanned::span)),
            "max_header_bytes must be between 1KiB and 1MiB",
        ));
    }
    if l.max_uri_bytes < 64 || l.max_uri_bytes > l.max_header_bytes {
        errors.push(
            ctx.err(
                span(raw.max_uri_bytes.as_ref().map(Spanned::span)),
                "max_uri_bytes must be at least 64 and no more than max_header_bytes",
            )
            .help("the request line is part of the header bytes"),
        );
    }
}

fn upstream(ctx: &Ctx, u: &Spanned<RawUpstream>) -> Result<Upstream, ConfigError> {
    let raw = u.get_ref();
    let echo = raw.echo.as_ref().is_some_and(|e| *e.get_ref());
    let url_only =
        raw.preserve_host.is_some() || raw.connect_timeout.is_some() || raw.timeout.is_some();
    let static_only = raw.directory_listing.is_some() || raw.index.is_some();
    if (url_only && raw.url.is_none()) || (static_only && raw.static_dir.is_none()) {
        return Err(ctx
            .err(u.span(), "a key here belongs to another kind of upstream")
            .help("preserve_host, connect_timeout and timeout go with `url`; directory_listing and index with `static_dir`"));
    }
    match (&raw.url, &raw.static_dir, echo) {
        (Some(url), None, false) => {
            let parsed: http::Uri = url
                .get_ref()
                .parse()
                .map_err(|_| ctx.err(url.span(), "not a valid URL"))?;
            let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
            if !scheme_ok || parsed.host().is_none() || parsed.query().is_some() {
                return Err(ctx.err(
                    url.span(),
                    "the upstream URL must be http(s)://host[:port][/prefix]",
                ));
            }
            let mut errors = Vec::new();
            let connect_timeout = raw
                .connect_timeout
                .as_ref()
                .and_then(|d| duration(ctx, d, &mut errors))
                .unwrap_or(Duration::from_secs(5));
            let timeout = raw
                .timeout
                .as_ref()
                .and_then(|d| duration(ctx, d, &mut errors))
                .unwrap_or(Duration::from_secs(30));
            if let Some(e) = errors.pop() {
                return Err(e);
            }
            Ok(Upstream::Url(UrlUpstream {
                url: parsed,
                preserve_host: raw.preserve_host.unwrap_or(false),
                connect_timeout,
                timeout,
            }))
        }
        (None, Some(dir), false) => {
            let index = raw.index.clone().unwrap_or_else(|| "index.html".to_owned());
            if index.contains(['/', '\\']) || index.starts_with('.') {
                return Err(ctx.err(
                    u.span(),
                    format!("index {index:?} must be a plain, visible file name"),
                ));
            }
            let path = ctx.path(dir.get_ref());
            let root = std::fs::canonicalize(&path)
                .ok()
                .filter(|p| p.is_dir())
                .ok_or_else(|| {
                    ctx.err(dir.span(), format!("{} is not a folder", path.display()))
                })?;
            Ok(Upstream::StaticDir(StaticSite {
                root,
                index: Some(index).filter(|i| !i.is_empty()),
                listing: raw.directory_listing.unwrap_or(false),
            }))
        }
        (None, None, true) => Ok(Upstream::Echo),
        _ => Err(ctx.err(
            u.span(),
            "give exactly one of `url`, `static_dir` and `echo = true`",
        )),
    }
}

/// Headers the gateway manages itself, which may not carry identities.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
];

fn identity_headers(
    ctx: &Ctx,
    raw: Option<&Spanned<RawUpstream>>,
    errors: &mut Vec<ConfigError>,
) -> IdentityHeaders {
    let mut out = IdentityHeaders::default();
    let Some(ih) = raw.and_then(|u| u.get_ref().identity_headers.as_ref()) else {
        return out;
    };
    let r = ih.get_ref();
    for (slot, v) in [
        (&mut out.subject, &r.subject),
        (&mut out.roles, &r.roles),
        (&mut out.scopes, &r.scopes),
    ] {
        let Some(v) = v else { continue };
        match HeaderName::from_bytes(v.get_ref().as_bytes()) {
            Ok(n) if RESERVED.contains(&n.as_str()) => errors.push(
                ctx.err(v.span(), format!("{n} is managed by the gateway"))
                    .help("pick a name of your own, such as X-Auth-Subject"),
            ),
            Ok(n) => *slot = n,
            Err(_) => errors.push(ctx.err(v.span(), "not a header name")),
        }
    }
    if out.subject == out.roles || out.subject == out.scopes || out.roles == out.scopes {
        errors.push(ctx.err(ih.span(), "the three identity headers need distinct names"));
    }
    out
}

fn decision_log(ctx: &Ctx, raw: &RawConfig, errors: &mut Vec<ConfigError>) -> DecisionLog {
    let queue = raw.log.queue.as_ref().map_or(65_536, |q| *q.get_ref());
    if let Some(q) = raw.log.queue.as_ref().filter(|_| queue == 0) {
        errors.push(ctx.err(q.span(), "the queue must hold at least one line"));
    }
    match raw.log.decisions.as_ref() {
        None => DecisionLog::Stdout { queue },
        Some(d) => match d.get_ref().as_str() {
            "stdout" => DecisionLog::Stdout { queue },
            "off" => DecisionLog::Off,
            "" => {
                errors.push(ctx.err(d.span(), "give `stdout`, `off` or a file path"));
                DecisionLog::Off
            }
            p => DecisionLog::File {
                path: ctx.path(p),
                queue,
            },
        },
    }
}

fn address(ctx: &Ctx, l: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    l.get_ref().parse().map_err(|_| {
        ctx.err(
            l.span(),
            format!("'{}' is not an address and port", l.get_ref()),
        )
        .help("write it as 127.0.0.1:8080 or [::1]:8080")
    })
}

fn cidr(ctx: &Ctx, c: &Spanned<String>) -> Result<IpNet, ConfigError> {
    let t = c.get_ref().trim();
    let net = super::network::parse_entry(t).ok_or_else(|| {
        ctx.err(c.span(), format!("'{t}' is not an address or CIDR"))
            .help("write e.g. 10.0.0.0/8, 192.0.2.1 or fd00::/8")
    })?;
    if net.prefix_len() == 0 {
        return Err(ctx
            .err(
                c.span(),
                "trusting every address lets any client name its own address",
            )
            .help("list your proxies' own networks"));
    }
    // Peers are compared as IPv4 when they are IPv4-mapped; so are these.
    let net = portcullis_core::network::canonical_net(net);
    if net.prefix_len() == 0 {
        return Err(ctx
            .err(
                c.span(),
                "trusting every IPv4 address lets any client name its own address",
            )
            .help("list your proxies' own networks"));
    }
    Ok(net)
}

fn existing_file(ctx: &Ctx, p: &Spanned<String>) -> Result<PathBuf, ConfigError> {
    let path = ctx.path(p.get_ref());
    if path.is_file() {
        Ok(path)
    } else {
        Err(ctx
            .err(
                p.span(),
                format!("{} is not a readable file", path.display()),
            )
            .help("paths are relative to the folder of the configuration file"))
    }
}

fn bytes(ctx: &Ctx, v: &Spanned<RawSize>, errors: &mut Vec<ConfigError>) -> Option<u64> {
    let r = match v.get_ref() {
        RawSize::Bytes(n) => Ok(*n),
        RawSize::Text(t) => parse_bytes(t),
    };
    r.map_err(|e| errors.push(ctx.err(v.span(), e))).ok()
}

fn duration(
    ctx: &Ctx,
    v: &Spanned<RawDuration>,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    match v.get_ref().millis() {
        Ok(0) => {
            errors.push(ctx.err(v.span(), "must be longer than zero"));
            None
        }
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(e) => {
            errors.push(ctx.err(v.span(), e));
            None
        }
    }
}
