//! API keys: presented in a configured header, known only by their SHA-256
//! digest, each mapped to a principal with roles and scopes.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use sha2::{Digest, Sha256};

use super::{AuthMethod, Identity};

/// One configured API key.
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// The principal it stands for.
    pub subject: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
}

/// The configured API keys.
#[derive(Debug)]
pub struct ApiKeyStore {
    header: HeaderName,
    keys: HashMap<[u8; 32], Arc<Identity>>,
}

impl ApiKeyStore {
    /// Build the store. Duplicate digests keep the first entry (the loader
    /// refuses duplicates before this).
    pub fn new(header: HeaderName, entries: Vec<ApiKeyEntry>) -> Self {
        let mut keys = HashMap::with_capacity(entries.len());
        for e in entries {
            keys.entry(e.sha256).or_insert_with(|| {
                Arc::new(Identity {
                    subject: e.subject,
                    roles: e.roles,
                    scopes: e.scopes,
                    attributes: Vec::new(),
                    method: AuthMethod::ApiKey,
                    expires_at: None,
                })
            });
        }
        ApiKeyStore { header, keys }
    }

    /// The header keys are read from.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The identity of a presented key.
    pub fn lookup(&self, presented: &[u8]) -> Option<Arc<Identity>> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.keys.get(&digest).cloned()
    }
}

/// The SHA-256 of a key, as lower-case hex (what the keys file stores).
pub fn digest_hex(key: &[u8]) -> String {
    hex(&Sha256::digest(key))
}

/// Lower-case hex, without a `format!` per byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}
