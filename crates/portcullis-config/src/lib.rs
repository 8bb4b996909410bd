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

use portcullis_core::Engine;
use portcullis_core::jsonwebtoken::Algorithm;

pub use diag::{ConfigError, LoadError};

/// What an allowed request is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP server.
    Url(String),
    /// A folder served by the built-in static file server.
    StaticDir(PathBuf),
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
    /// Where `serve` listens.
    pub listen: Option<SocketAddr>,
    /// Where allowed requests go.
    pub upstream: Option<Upstream>,
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
