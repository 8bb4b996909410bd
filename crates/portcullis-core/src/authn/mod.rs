//! Stage 8: authentication. Extracts the one credential a request carries
//! (bearer token or API key), verifies it, and yields the caller's identity.
//!
//! Verification is pure: keys and the current time are inputs. The only state
//! is the bounded cache of verified tokens, which changes nothing about the
//! answer, only how fast it comes.

pub mod apikey;
mod cache;
pub mod jwt;
pub mod keys;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::{HeaderMap, header::AUTHORIZATION};
use serde_json::Value;

pub use apikey::ApiKeyStore;
pub use jwt::{JwtSettings, JwtVerifier, KeySet, TokenError, VerificationKey};

/// Whether a route needs an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid credential is required.
    Required,
    /// A credential is used if given (and must then be valid); none means anonymous.
    Optional,
    /// Credentials are not verified; everyone is anonymous. (Malformed
    /// framing, such as two `Authorization` headers, is still refused.)
    Off,
}

impl AuthMode {
    /// The name used in configuration and traces.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Optional => "optional",
            AuthMode::Off => "off",
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A verified JWT bearer token.
    Jwt,
    /// A known API key.
    ApiKey,
}

impl AuthMethod {
    /// The name used in the Cedar context and in traces.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The subject (the principal's entity id).
    pub subject: String,
    /// Roles, which become the principal's parent entities.
    pub roles: Vec<String>,
    /// OAuth scopes.
    pub scopes: Vec<String>,
    /// Further claims mapped to principal attributes.
    pub attributes: Vec<(String, Value)>,
    /// How the identity was proven.
    pub method: AuthMethod,
    /// The token's `exp`, in Unix seconds, when it has one.
    pub expires_at: Option<i64>,
}

/// Why authentication did not produce an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential, on a route that requires one.
    Missing,
    /// More than one `Authorization` header, API key header, or both kinds.
    Ambiguous(&'static str),
    /// The bearer token was refused.
    Token(TokenError),
    /// The API key is unknown.
    UnknownApiKey,
}

/// The outcome of authentication for one request.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// No identity, and the route accepts that.
    Anonymous,
    /// A verified identity.
    Authenticated(Arc<Identity>),
    /// Refused.
    Failed(AuthFailure),
}

/// The authentication settings of an engine.
#[derive(Debug)]
pub struct Authenticator {
    realm: String,
    jwt: Option<JwtVerifier>,
    api_keys: Option<ApiKeyStore>,
}

enum Credential<'a> {
    None,
    Bearer(&'a str),
    ApiKey(&'a [u8]),
}

impl Authenticator {
    /// Build from the configured parts.
    pub fn new(realm: String, jwt: Option<JwtVerifier>, api_keys: Option<ApiKeyStore>) -> Self {
        Authenticator {
            realm,
            jwt,
            api_keys,
        }
    }

    /// The realm named in `WWW-Authenticate`.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The header API keys arrive in, when API keys are configured.
    pub fn api_key_header(&self) -> Option<&http::HeaderName> {
        self.api_keys.as_ref().map(|s| s.header())
    }

    /// The JWT verifier, when bearer tokens are configured.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// Authenticate one request. `now` is Unix seconds.
    pub fn authenticate(&self, headers: &HeaderMap, mode: AuthMode, now: i64) -> AuthOutcome {
        let credential = match self.extract(headers) {
            Ok(c) => c,
            Err(f) => return AuthOutcome::Failed(f),
        };
        if mode == AuthMode::Off {
            // The token is not used here, so its shape is checked here: a
            // malformed Bearer value is refused on every route, never taken
            // as no credential. Where the token is used, the verifier parses
            // it strictly (and only verified tokens are ever cached).
            return match credential {
                Credential::Bearer(t) if !is_token68(t) => {
                    AuthOutcome::Failed(AuthFailure::Token(TokenError::Malformed))
                }
                _ => AuthOutcome::Anonymous,
            };
        }
        let result = match credential {
            Credential::None if mode == AuthMode::Required => Err(AuthFailure::Missing),
            Credential::None => return AuthOutcome::Anonymous,
            Credential::Bearer(token) => match &self.jwt {
                Some(v) => v.verify(token, now).map_err(AuthFailure::Token),
                None => Err(AuthFailure::Token(TokenError::NotAccepted)),
            },
            Credential::ApiKey(key) => self
                .api_keys
                .as_ref()
                .and_then(|s| s.lookup(key))
                .ok_or(AuthFailure::UnknownApiKey),
        };
        match result {
            Ok(id) => AuthOutcome::Authenticated(id),
            Err(f) => AuthOutcome::Failed(f),
        }
    }

    /// Find the single credential. Malformed framing (two of anything) is
    /// refused whatever the route says, since it signals a confused or hostile
    /// client between two parsers.
    fn extract<'h>(&self, headers: &'h HeaderMap) -> Result<Credential<'h>, AuthFailure> {
        let mut auth = headers.get_all(AUTHORIZATION).iter();
        let authorization = auth.next();
        if auth.next().is_some() {
            return Err(AuthFailure::Ambiguous("more than one Authorization header"));
        }
        let bearer = match authorization {
            Some(v) => bearer_token(v.as_bytes())?,
            None => None,
        };
        let api_key = match &self.api_keys {
            Some(store) => {
                let mut values = headers.get_all(store.header()).iter();
                let first = values.next();
                if values.next().is_some() {
                    return Err(AuthFailure::Ambiguous("more than one API key header"));
                }
                first.map(|v| v.as_bytes())
            }
            None => None,
        };
        match (bearer, api_key) {
            (Some(_), Some(_)) => Err(AuthFailure::Ambiguous(
                "both a bearer token and an API key were sent",
            )),
            (Some(t), None) => Ok(Credential::Bearer(t)),
            (None, Some(k)) => Ok(Credential::ApiKey(k)),
            (None, None) => Ok(Credential::None),
        }
    }
}

/// Bytes a token68 may hold (RFC 9110 §11.2), as a table: this runs on
/// every request.
const TOKEN68: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

/// A non-empty token68: allowed bytes, then optional trailing `=`.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| TOKEN68[usize::from(b)])
}

/// The token of a `Bearer` authorization value. Another scheme is not a bearer
/// credential (`None`); a Bearer value without a well-formed token is refused.
fn bearer_token(value: &[u8]) -> Result<Option<&str>, AuthFailure> {
    let Ok(value) = std::str::from_utf8(value) else {
        return Err(AuthFailure::Token(TokenError::Malformed));
    };
    // RFC 9110 allows one or more spaces; a tab is accepted too, so that no
    // spelling of "Bearer <token>" is mistaken for "no credential".
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest
        .trim_start_matches([' ', '\t'])
        .trim_end_matches([' ', '\t']);
    if !token.is_empty() {
        Ok(Some(token))
    } else {
        Err(AuthFailure::Token(TokenError::Malformed))
    }
}
