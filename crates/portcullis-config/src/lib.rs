//! portcullis-config: reads a configuration file and everything it names
//! (Cedar policies, schema, entities, keys, API keys) and compiles it into a
//! validated [`Engine`]. The only crate that touches the filesystem for
//! configuration; every error names the file, line and column.
//!
//! Loading has two stages: [`raw`] mirrors the TOML with serde, refusing
//! unknown keys; [`compile`] resolves paths, parses and validates policies
//! against the schema, builds the route table and keys, and refuses
//! contradictions. An [`Engine`] exists only if all of it passed.

pub mod compile;
pub mod diag;
pub mod duration;
pub mod mint;
pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_core::Engine;
use portcullis_core::jsonwebtoken::Algorithm;

pub use compile::geo::MmdbCountries;
pub use diag::{ConfigError, LoadError};

/// What an allowed request is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP server.
    Url(UrlUpstream),
    /// A folder served by the built-in static file server.
    StaticDir(StaticSite),
    /// The built-in echo: answers with what an upstream would have received.
    Echo,
}

/// `[upstream] url = ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlUpstream {
    /// Scheme, authority and an optional path prefix.
    pub url: http::Uri,
    /// Send the client's `Host` instead of the URL's authority.
    pub preserve_host: bool,
    /// Connecting longer than this is a 502.
    pub connect_timeout: Duration,
    /// Response headers later than this are a 504.
    pub timeout: Duration,
}

/// `[upstream] static_dir = ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSite {
    /// The folder, canonicalised: nothing outside it is served.
    pub root: PathBuf,
    /// The index file of a folder.
    pub index: Option<String>,
    /// Whether a folder without an index is listed (else 403).
    pub listing: bool,
}

/// `[server]`, compiled.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where `serve` listens (`--listen` overrides it).
    pub listen: Option<SocketAddr>,
    /// The admin listener (`/metrics`, `/healthz`).
    pub admin_listen: Option<SocketAddr>,
    /// Serve HTTPS with these.
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Request-Id` and forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sizes and counts.
    pub limits: Limits,
    /// Time to send the request head.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
}

/// Request and connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections.
    pub max_connections: usize,
    /// Bytes of the request line and headers (431).
    pub max_header_bytes: usize,
    /// Header fields (431).
    pub max_headers: usize,
    /// Bytes of the request target (414).
    pub max_uri_bytes: usize,
    /// Body bytes where the route sets none (413).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body: 10 * 1024 * 1024,
        }
    }
}

/// Where rate limits are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitStore {
    /// In this process (the default; each instance counts alone).
    Memory {
        /// Keys held at most.
        max_keys: usize,
    },
    /// In Redis, shared by every instance.
    Redis {
        /// The server.
        url: String,
        /// Prefix of every key.
        key_prefix: String,
        /// Time for one round trip.
        timeout: Duration,
    },
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The header names that carry the caller's identity to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// The subject.
    pub subject: http::HeaderName,
    /// Roles, comma-separated.
    pub roles: http::HeaderName,
    /// Scopes, space-separated.
    pub scopes: http::HeaderName,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            subject: http::HeaderName::from_static("x-auth-subject"),
            roles: http::HeaderName::from_static("x-auth-roles"),
            scopes: http::HeaderName::from_static("x-auth-scopes"),
        }
    }
}

/// Where decision-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionLog {
    /// Nowhere.
    Off,
    /// Standard output.
    Stdout {
        /// Queue length.
        queue: usize,
    },
    /// Appended to a file.
    File {
        /// The file.
        path: PathBuf,
        /// Queue length.
        queue: usize,
    },
}

/// The HMAC key `portcullis token` signs with.
#[derive(Clone)]
pub struct MintKey {
    /// The `kid` to put in the header.
    pub kid: Option<String>,
    /// The algorithm.
    pub alg: Algorithm,
    /// The secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for MintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A JWKS URL the server fetches at start and refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    /// The URL.
    pub url: String,
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Loaded {
    /// The decision engine.
    pub engine: Engine,
    /// The listener and its limits.
    pub server: Server,
    /// Where allowed requests go.
    pub upstream: Option<Upstream>,
    /// Identity header names for the upstream.
    pub identity_headers: IdentityHeaders,
    /// The decision log.
    pub decision_log: DecisionLog,
    /// Where rate limits are counted.
    pub rate_limit_store: LimitStore,
    /// The country database, if `[geoip]` names one.
    pub geoip: Option<std::sync::Arc<MmdbCountries>>,
    /// The prefix of the Redis keys bans are kept under.
    pub ban_key_prefix: String,
    /// Body limits of routes that set one, by route name.
    pub route_max_body: std::collections::HashMap<String, u64>,
    /// The key `portcullis token` signs with, if an HMAC key is configured.
    pub mint: Option<MintKey>,
    /// Token claims `portcullis token` fills in.
    pub token_defaults: TokenDefaults,
    /// JWKS URLs to fetch.
    pub jwks_urls: Vec<JwksUrl>,
    /// The keys from files and inline secrets, which a JWKS refresh keeps.
    pub static_keys: portcullis_core::authn::KeySet,
    /// Warnings that did not stop the load (Cedar validator warnings).
    pub warnings: Vec<String>,
    /// The configuration file.
    pub path: PathBuf,
}

/// What a minted token carries besides what the command line gives.
#[derive(Debug, Clone, Default)]
pub struct TokenDefaults {
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud` (the first configured audience).
    pub audience: Option<String>,
    /// The subject claim name.
    pub subject_claim: String,
    /// The roles claim path.
    pub roles_claim: Vec<String>,
}

/// Load and validate a configuration file.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    compile::load(path)
}

/// Load and validate configuration text as if it were the file at `path`
/// (files it names are read relative to `path`'s folder). For fuzzing and
/// for callers that hold the text already.
pub fn load_text(path: &Path, text: String) -> Result<Loaded, LoadError> {
    compile::load_text(path, text)
}
