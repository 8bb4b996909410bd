//! Stage one of loading: a serde mirror of the configuration file. No I/O, no
//! interpretation; unknown keys are refused so a typo never silently becomes
//! a default. Values that later checks may refuse keep their spans.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where `serve` listens.
    #[serde(default)]
    pub server: RawServer,
    /// What allowed requests are forwarded to.
    pub upstream: Option<Spanned<RawUpstream>>,
    /// Credentials.
    #[serde(default)]
    pub authentication: RawAuthentication,
    /// Cedar files and entity names.
    pub policy: Spanned<RawPolicy>,
    /// The decision log.
    #[serde(default)]
    pub log: RawLog,
    /// Named IP lists.
    #[serde(default)]
    pub ip_lists: std::collections::BTreeMap<String, Spanned<RawIpList>>,
    /// Global network gates.
    pub network: Option<Spanned<RawNetwork>>,
    /// The country database.
    pub geoip: Option<Spanned<RawGeoIp>>,
    /// Timed bans and the rules that escalate to them.
    pub bans: Option<Spanned<RawBans>>,
    /// Named rate limits.
    #[serde(default)]
    pub rate_limits: std::collections::BTreeMap<String, Spanned<RawRateLimit>>,
    /// Where rate limits are counted.
    #[serde(default)]
    pub rate_limit_store: RawLimitStore,
    /// User-Agent and request rules, in order.
    #[serde(default, rename = "request_rule")]
    pub request_rules: Vec<Spanned<RawRule>>,
    /// The routes, in order.
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RawRoute>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `host:port` to listen on.
    pub listen: Option<Spanned<String>>,
    /// Peers (CIDRs) whose `X-Request-Id` and forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// The header trusted proxies name the client in: `X-Forwarded-For`
    /// (default), `Forwarded`, or a single-address header such as `X-Real-IP`.
    pub client_ip_header: Option<Spanned<String>>,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: Option<Spanned<usize>>,
    /// Bytes of the request line and headers together (431 above).
    pub max_header_bytes: Option<Spanned<RawSize>>,
    /// Header fields (431 above).
    pub max_headers: Option<Spanned<usize>>,
    /// Bytes of the request target (414 above).
    pub max_uri_bytes: Option<Spanned<RawSize>>,
    /// Request body bytes, unless the route says otherwise (413 above).
    pub max_body: Option<Spanned<RawSize>>,
    /// Time allowed to send the request line and headers.
    pub header_read_timeout: Option<Spanned<RawDuration>>,
    /// A connection with no bytes moving for this long is closed.
    pub idle_timeout: Option<Spanned<RawDuration>>,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_timeout: Option<Spanned<RawDuration>>,
    /// Certificate and key files: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<Spanned<RawTls>>,
    /// `host:port` of the admin listener (`/metrics`, `/healthz`).
    pub admin_listen: Option<Spanned<String>>,
}

/// `[server.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
}

/// Bytes, or a string such as `64KiB`, `10MB`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawSize {
    /// Bytes.
    Bytes(u64),
    /// With a unit.
    Text(String),
}

/// `[upstream]`: a URL, a folder to serve, or the built-in echo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// An `http://` or `https://` URL.
    pub url: Option<Spanned<String>>,
    /// A folder served by the built-in static file server.
    pub static_dir: Option<Spanned<String>>,
    /// Answer every allowed request with what the upstream would receive.
    pub echo: Option<Spanned<bool>>,
    /// Send the client's `Host` (default: the upstream URL's authority).
    pub preserve_host: Option<bool>,
    /// Time to connect to the upstream (502 after).
    pub connect_timeout: Option<Spanned<RawDuration>>,
    /// Time for the upstream's response headers to arrive (504 after).
    pub timeout: Option<Spanned<RawDuration>>,
    /// Static files: list folders without an index (default false).
    pub directory_listing: Option<bool>,
    /// Static files: the index file of a folder (default `index.html`).
    pub index: Option<String>,
    /// Header names carrying the caller's identity to the upstream.
    pub identity_headers: Option<Spanned<RawIdentityHeaders>>,
}

/// `[upstream.identity_headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    /// The subject (default `X-Auth-Subject`).
    pub subject: Option<Spanned<String>>,
    /// Roles, comma-separated (default `X-Auth-Roles`).
    pub roles: Option<Spanned<String>>,
    /// Scopes, space-separated (default `X-Auth-Scopes`).
    pub scopes: Option<Spanned<String>>,
}

/// `[ip_lists.NAME]`: addresses and CIDRs, inline or from files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpList {
    /// Inline entries.
    #[serde(default)]
    pub cidrs: Vec<Spanned<String>>,
    /// Files: one entry a line, `#` comments.
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
    /// The client-facing message when this list blocks.
    pub message: Option<String>,
}

/// `[network]`: the lists every request is checked against.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// Names of lists whose addresses are refused.
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    /// Names of lists outside which every address is refused.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// ISO 3166-1 alpha-2 codes refused.
    #[serde(default)]
    pub deny_countries: Vec<Spanned<String>>,
    /// When present, only these countries pass.
    #[serde(default)]
    pub allow_countries: Vec<Spanned<String>>,
    /// `allow` or `deny` an address with no country (default: `deny` when
    /// there is an allow list, else `allow`).
    pub unknown_country: Option<Spanned<String>>,
    /// The client-facing message when the country rules refuse.
    pub country_message: Option<String>,
    /// Names of rate limits every request counts against.
    #[serde(default)]
    pub rate_limits: Vec<Spanned<String>>,
}

/// `[geoip]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoIp {
    /// A MaxMind DB file with country data (GeoIP2/GeoLite2 Country or
    /// City, or any database with the same `country.iso_code` layout).
    pub database: Spanned<String>,
}

/// `[bans]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBans {
    /// The client-facing message of a `Banned` refusal.
    pub message: Option<String>,
    /// `open` (default) or `closed`: what happens when the store is down.
    pub on_store_error: Option<Spanned<String>>,
    /// Prefix of the Redis keys of bans and strikes (default `portcullis:ban:`).
    pub key_prefix: Option<String>,
    /// The escalation rules.
    #[serde(default)]
    pub rules: std::collections::BTreeMap<String, Spanned<RawBanRule>>,
}

/// `[bans.rules.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBanRule {
    /// Response statuses that count as a strike.
    pub statuses: Spanned<Vec<Spanned<u16>>>,
    /// A ban starts when strikes exceed this many...
    pub more_than: Spanned<u32>,
    /// ...within this long.
    pub within: Spanned<RawDuration>,
    /// How long the ban lasts.
    pub ban_for: Spanned<RawDuration>,
    /// `ip` (default) or `ip_prefix`.
    pub key: Option<Spanned<String>>,
    /// IPv4 prefix length for `ip_prefix` (default 24).
    pub ipv4_prefix: Option<Spanned<u8>>,
    /// IPv6 prefix length for `ip_prefix` (default 64).
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// Count only responses on these routes (default: all).
    #[serde(default)]
    pub routes: Vec<Spanned<String>>,
}

/// `[rate_limits.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Requests per period (also the burst).
    pub limit: Spanned<u32>,
    /// The period.
    pub period: Spanned<RawDuration>,
    /// Key parts: `ip`, `ip_prefix`, `subject`, `api_key`, `route`, `header:NAME`.
    pub key: Spanned<Vec<Spanned<String>>>,
    /// IPv4 prefix length for `ip_prefix` (default 24).
    pub ipv4_prefix: Option<Spanned<u8>>,
    /// IPv6 prefix length for `ip_prefix` (default 64).
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// `open` (default) or `closed`: what happens when the store is down.
    pub on_store_error: Option<Spanned<String>>,
}

/// One `[[request_rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique id (named in decisions and logs).
    pub id: Spanned<String>,
    /// Methods it applies to (all when absent), written as for routes.
    pub methods: Option<Spanned<Vec<String>>>,
    /// The canonical path.
    pub path: Option<Spanned<RawMatch>>,
    /// The User-Agent.
    pub user_agent: Option<Spanned<RawMatch>>,
    /// A header: `{ name = "...", exact|prefix|regex = "..." }`.
    pub header: Option<Spanned<RawNamedMatch>>,
    /// A query parameter: `{ name = "...", exact|prefix|regex = "..." }`.
    pub query: Option<Spanned<RawNamedMatch>>,
    /// `block` (default) or `log` (only record that it would have blocked).
    pub action: Option<Spanned<String>>,
    /// The client-facing message.
    pub message: Option<String>,
}

/// `{ exact = "..." }`, `{ prefix = "..." }` or `{ regex = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Equal.
    pub exact: Option<String>,
    /// Starts with.
    pub prefix: Option<String>,
    /// Matches anywhere.
    pub regex: Option<String>,
}

/// A header or query parameter and how its value is matched.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNamedMatch {
    /// The header or parameter name.
    pub name: Spanned<String>,
    /// Equal.
    pub exact: Option<String>,
    /// Starts with.
    pub prefix: Option<String>,
    /// Matches anywhere.
    pub regex: Option<String>,
}

/// `[rate_limit_store]`: where limits are counted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitStore {
    /// A Redis URL (`redis://host:port/db`); in memory when absent.
    pub redis: Option<Spanned<String>>,
    /// Prefix of every Redis key (default `portcullis:rl:`).
    pub key_prefix: Option<String>,
    /// Time allowed for one Redis round trip (default 100ms).
    pub timeout: Option<Spanned<RawDuration>>,
    /// Keys the in-memory store holds at most (default 1000000).
    pub max_keys: Option<Spanned<usize>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `stdout`, `off`, or a file path (appended to).
    pub decisions: Option<Spanned<String>>,
    /// Lines the queue holds before requests wait for the writer.
    pub queue: Option<Spanned<usize>>,
}

/// `[authentication]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthentication {
    /// The realm in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: Spanned<String>,
    /// Bearer tokens.
    pub jwt: Option<Spanned<RawJwt>>,
    /// API keys.
    pub api_keys: Option<Spanned<RawApiKeys>>,
}

impl Default for RawAuthentication {
    fn default() -> Self {
        RawAuthentication {
            realm: default_realm(),
            jwt: None,
            api_keys: None,
        }
    }
}

fn default_realm() -> Spanned<String> {
    Spanned::new(0..0, "portcullis".to_owned())
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Many.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Seconds, or a string such as `30s`, `5m`, `1h`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawDuration {
    /// Whole seconds.
    Seconds(u64),
    /// With a unit.
    Text(String),
}

impl RawDuration {
    /// In milliseconds (`ms`, `s`, `m`, `h`; a bare number is seconds).
    pub fn millis(&self) -> Result<u64, String> {
        match self {
            RawDuration::Seconds(n) => Ok(n.saturating_mul(1000)),
            RawDuration::Text(t) => crate::duration::parse_millis(t),
        }
    }
}

/// `[authentication.jwt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// Accepted algorithms (required: there is no safe default).
    pub algorithms: Spanned<Vec<Spanned<String>>>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values (required unless `require_audience = false`).
    pub audience: Option<Spanned<OneOrMany>>,
    /// Set to false to accept tokens for any audience (not recommended).
    pub require_audience: Option<bool>,
    /// Clock skew for `exp` and `nbf`.
    pub leeway: Option<Spanned<RawDuration>>,
    /// Refuse tokens without `exp` (default true).
    pub require_exp: Option<bool>,
    /// Largest token in bytes (default 8192).
    pub max_token_bytes: Option<usize>,
    /// Verified tokens kept (default 10000).
    pub cache_capacity: Option<usize>,
    /// The subject claim (default `sub`).
    pub subject_claim: Option<String>,
    /// Dotted path of the roles claim (default `roles`).
    pub roles_claim: Option<String>,
    /// Claims copied to principal attributes.
    #[serde(default)]
    pub attribute_claims: Vec<String>,
    /// Verification keys.
    #[serde(default)]
    pub keys: Vec<Spanned<RawKey>>,
}

/// One `[[authentication.jwt.keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// The `kid` tokens name.
    pub kid: Option<String>,
    /// Pin the key to one algorithm.
    pub alg: Option<Spanned<String>>,
    /// An HMAC secret, inline.
    pub secret: Option<Spanned<String>>,
    /// An HMAC secret read from a file.
    pub secret_file: Option<Spanned<String>>,
    /// An HMAC secret read from an environment variable.
    pub secret_env: Option<Spanned<String>>,
    /// A PEM public key (RSA, EC P-256/P-384, Ed25519).
    pub pem: Option<Spanned<String>>,
    /// A JWKS file.
    pub jwks: Option<Spanned<String>>,
    /// A JWKS URL, fetched by the server.
    pub jwks_url: Option<Spanned<String>>,
}

/// `[authentication.api_keys]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// The header keys arrive in.
    pub header: Spanned<String>,
    /// The keys file.
    pub file: Spanned<String>,
}

/// The API keys file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyFile {
    /// The keys.
    #[serde(default, rename = "key")]
    pub keys: Vec<Spanned<RawApiKey>>,
}

/// One `[[key]]` of the API keys file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// Lower-case hex SHA-256 of the key.
    pub sha256: Spanned<String>,
    /// The principal.
    pub subject: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Cedar policy files.
    pub files: Spanned<Vec<Spanned<String>>>,
    /// The Cedar schema (`.cedarschema` or `.json`).
    pub schema: Spanned<String>,
    /// Entities (Cedar JSON format).
    pub entities: Option<Spanned<String>>,
    /// Principal type (default `User`).
    pub principal_type: Option<Spanned<String>>,
    /// Role type (default `Role`).
    pub role_type: Option<Spanned<String>>,
    /// Anonymous principal (default `Anonymous::"anonymous"`).
    pub anonymous_principal: Option<Spanned<String>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The route's name (unique).
    pub name: Spanned<String>,
    /// Methods (`["*"]` for any).
    pub methods: Spanned<Vec<String>>,
    /// Path template.
    pub path: Spanned<String>,
    /// Host (any when absent).
    pub host: Option<Spanned<String>>,
    /// Cedar action: `readUser` or `Action::"readUser"`.
    pub action: Spanned<String>,
    /// Resource entity.
    pub resource: Option<Spanned<RawResource>>,
    /// `required` (default), `optional` or `off`.
    pub auth: Option<Spanned<String>>,
    /// Scopes a token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Deny as 404.
    #[serde(default)]
    pub conceal: bool,
    /// Denial text when no policy annotation gives one.
    pub deny: Option<RawDeny>,
    /// Request body bytes (413 above); the server's `max_body` otherwise.
    pub max_body: Option<Spanned<RawSize>>,
    /// Names of IP lists refused on this route.
    #[serde(default)]
    pub ip_deny: Vec<Spanned<String>>,
    /// Names of IP lists outside which this route refuses.
    #[serde(default)]
    pub ip_allow: Vec<Spanned<String>>,
    /// ISO 3166-1 alpha-2 codes refused.
    #[serde(default)]
    pub deny_countries: Vec<Spanned<String>>,
    /// When present, only these countries pass.
    #[serde(default)]
    pub allow_countries: Vec<Spanned<String>>,
    /// `allow` or `deny` an address with no country (default: `deny` when
    /// there is an allow list, else `allow`).
    pub unknown_country: Option<Spanned<String>>,
    /// The client-facing message when the country rules refuse.
    pub country_message: Option<String>,
    /// Names of rate limits this route's requests count against.
    #[serde(default)]
    pub rate_limits: Vec<Spanned<String>>,
}

/// `resource = { type = "User", id = "{id}" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    /// Entity type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Id template with `{param}` placeholders.
    pub id: Option<String>,
}

/// `deny = { error = "...", message = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeny {
    /// Code.
    pub error: Option<String>,
    /// Message.
    pub message: Option<String>,
}
