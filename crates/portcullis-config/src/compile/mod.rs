//! Stage two of loading: from the raw mirror to a validated engine. Paths
//! resolve against the configuration file's folder. Errors are collected
//! where one does not hide another, so `portcullis check` shows them all.

mod auth;
mod bans;
pub(crate) mod geo;
mod limits;
mod network;
mod policy;
mod routes;
mod rules;
mod serving;

use std::ops::Range;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use portcullis_core::Engine;
use portcullis_core::authz::CedarPolicy;
use portcullis_core::network::CountryLookup;
use toml::Spanned;

use crate::Loaded;
use crate::diag::{ConfigError, LoadError, Source};
use crate::raw::RawConfig;

/// The configuration file and the folder its paths are relative to.
pub(crate) struct Ctx {
    pub dir: PathBuf,
    pub src: Source,
}

impl Ctx {
    /// An error at a span of the configuration file.
    pub fn err(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.src, span, msg)
    }

    /// Resolve a path written in the configuration file.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// Read a file named by a configuration value; a failure points at the value.
    pub fn read(&self, p: &Spanned<String>) -> Result<(PathBuf, Source), ConfigError> {
        let path = self.path(p.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path.clone(), Source::new(&path, text))),
            Err(e) => Err(self
                .err(p.span(), format!("cannot read {}: {e}", path.display()))
                .help("paths are relative to the folder of the configuration file")),
        }
    }
}

pub(crate) fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read the configuration: {e}")))?;
    load_text(path, text)
}

/// Load from configuration text that claims to come from `path` (whose
/// folder the files it names are relative to).
pub(crate) fn load_text(path: &Path, text: String) -> Result<Loaded, LoadError> {
    let src = Source::new(path, text);
    let raw: RawConfig = toml::from_str(&src.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError::at(&src, span, e.message().trim().to_owned())
            .help("docs/configuration.md lists every key")
    })?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let ctx = Ctx { dir, src };

    let mut errors = Vec::new();
    let policy = policy::compile(&ctx, &raw.policy);
    let auth = auth::compile(&ctx, &raw.authentication);
    let serving = serving::compile(&ctx, &raw)
        .map_err(|mut e| errors.append(&mut e))
        .ok();
    let geoip = geo::open(&ctx, &raw).map_err(|e| errors.push(e)).ok();
    let have_db = raw.geoip.is_some();
    let gates = network::compile(&ctx, &raw, have_db)
        .map_err(|mut e| errors.append(&mut e))
        .ok();
    let bans = bans::compile(&ctx, &raw)
        .map_err(|mut e| errors.append(&mut e))
        .ok();
    let rate_limits = limits::compile(&ctx, &raw)
        .map_err(|mut e| errors.append(&mut e))
        .ok();
    let rate_limit_store = limits::store(&ctx, &raw).map_err(|e| errors.push(e)).ok();
    let request_rules = rules::compile(&ctx, &raw)
        .map_err(|mut e| errors.append(&mut e))
        .ok();
    let (policy, auth) = match (policy, auth) {
        (Ok(p), Ok(a)) => (p, a),
        (p, a) => {
            errors.extend(p.err().into_iter().flatten());
            errors.extend(a.err().into_iter().flatten());
            return Err(errors.into());
        }
    };
    let (table, specs) = match routes::compile(&ctx, &raw.routes, &policy) {
        Ok(r) => r,
        Err(mut e) => {
            errors.append(&mut e);
            return Err(errors.into());
        }
    };
    let (
        Some(serving),
        Some((global_gate, route_gates)),
        Some((global_limits, route_limits)),
        Some(rate_limit_store),
        Some(request_rules),
        Some(geoip),
        Some((bans, ban_key_prefix)),
    ) = (
        serving.filter(|_| errors.is_empty()),
        gates,
        rate_limits,
        rate_limit_store,
        request_rules,
        geoip,
        bans,
    )
    else {
        return Err(errors.into());
    };
    let actions: Vec<_> = specs.iter().map(|s| s.action.clone()).collect();
    let cedar = CedarPolicy::new(&policy.policies, policy.entities, policy.names, &actions)
        .map_err(|e| {
            ConfigError::at(
                &ctx.src,
                raw.policy.span(),
                format!("the policies could not be prepared: {e}"),
            )
        })?;
    let mut engine = Engine::new(table, specs, auth.authenticator, cedar)
        .with_client_policy(serving.client)
        .with_ip_gates(global_gate, route_gates)
        .with_rate_limits(global_limits, route_limits)
        .with_rules(request_rules);
    if let Some(db) = &geoip {
        engine = engine.with_geo(Arc::clone(db) as Arc<dyn CountryLookup>);
    }
    if let Some(b) = bans {
        engine = engine.with_bans(b);
    }
    Ok(Loaded {
        engine,
        geoip,
        ban_key_prefix,
        server: serving.server,
        upstream: serving.upstream,
        identity_headers: serving.identity_headers,
        decision_log: serving.decision_log,
        route_max_body: serving.route_max_body,
        rate_limit_store,
        mint: auth.mint,
        token_defaults: auth.token_defaults,
        jwks_urls: auth.jwks_urls,
        static_keys: auth.static_keys,
        warnings: policy.warnings,
        path: path.to_path_buf(),
    })
}

/// An error code an operator may write: an identifier such as `InsufficientPermissions`.
pub(crate) fn is_error_code(code: &str) -> bool {
    code.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
