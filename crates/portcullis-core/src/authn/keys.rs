//! Verification keys from PEM and JWKS text. Pure: the caller reads the file
//! or fetches the URL. The key type is read from the key itself (the SPKI
//! algorithm identifier, or the JWK `kty`/`crv`), never from a token.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwt::{KeyFamily, KeySet, VerificationKey};

const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// A public key from PEM (`PUBLIC KEY` SPKI, or `RSA PUBLIC KEY` PKCS#1).
pub fn key_from_pem(
    pem: &[u8],
    kid: Option<String>,
    alg: Option<Algorithm>,
) -> Result<VerificationKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the file is not PEM text".to_owned())?;
    let label = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| "no '-----BEGIN ...-----' line found".to_owned())?;
    if label.contains("PRIVATE") {
        return Err(format!(
            "this is a private key ({label}); give the gateway only the public key"
        ));
    }
    let (family, key) = match label {
        "RSA PUBLIC KEY" => (KeyFamily::Rsa, DecodingKey::from_rsa_pem(pem)),
        "PUBLIC KEY" => {
            let der = pem_body(text)?;
            let family = if contains(&der, OID_RSA) {
                KeyFamily::Rsa
            } else if contains(&der, OID_P256) {
                KeyFamily::EcP256
            } else if contains(&der, OID_P384) {
                KeyFamily::EcP384
            } else if contains(&der, OID_ED25519) {
                KeyFamily::Ed25519
            } else {
                return Err(
                    "unsupported public key type (RSA, EC P-256, EC P-384 and Ed25519 are supported)"
                        .to_owned(),
                );
            };
            let key = match family {
                KeyFamily::Rsa => DecodingKey::from_rsa_pem(pem),
                KeyFamily::EcP256 | KeyFamily::EcP384 => DecodingKey::from_ec_pem(pem),
                KeyFamily::Ed25519 | KeyFamily::Hmac => DecodingKey::from_ed_pem(pem),
            };
            (family, key)
        }
        other => return Err(format!("unsupported PEM block '{other}'")),
    };
    let key = key.map_err(|e| format!("the key could not be parsed: {e}"))?;
    check_pin(family, alg)?;
    Ok(VerificationKey {
        kid,
        alg,
        family,
        key,
    })
}

/// Keys from a JWKS document. Keys marked for encryption are skipped; a key
/// of an unsupported type is an error (so a typo is not silently ignored).
pub fn keys_from_jwks(json: &str) -> Result<KeySet, String> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let which = jwk
            .common
            .key_id
            .as_deref()
            .map_or_else(|| format!("key #{i}"), |k| format!("key {k:?}"));
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => KeyFamily::EcP256,
                EllipticCurve::P384 => KeyFamily::EcP384,
                _ => return Err(format!("{which}: unsupported curve")),
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                KeyFamily::Ed25519
            }
            AlgorithmParameters::OctetKey(_) => KeyFamily::Hmac,
            _ => return Err(format!("{which}: unsupported key type")),
        };
        let alg = match &jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(
                Algorithm::from_str(&format!("{a:?}"))
                    .map_err(|_| format!("{which}: 'alg' {a:?} is not a signing algorithm"))?,
            ),
        };
        check_pin(family, alg).map_err(|e| format!("{which}: {e}"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{which}: {e}"))?;
        keys.push(VerificationKey {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key,
        });
    }
    Ok(KeySet { keys })
}

fn check_pin(family: KeyFamily, alg: Option<Algorithm>) -> Result<(), String> {
    match alg {
        Some(a) if !family.fits(a) => Err(format!("algorithm {a:?} does not fit a {family:?} key")),
        _ => Ok(()),
    }
}

fn pem_body(text: &str) -> Result<Vec<u8>, String> {
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM body is not base64: {e}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../testdata/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn pem_key_types_are_read_from_the_key() {
        for (file, fam) in [
            ("rsa.pub.pem", KeyFamily::Rsa),
            ("ec256.pub.pem", KeyFamily::EcP256),
            ("ec384.pub.pem", KeyFamily::EcP384),
            ("ed25519.pub.pem", KeyFamily::Ed25519),
        ] {
            assert_eq!(
                key_from_pem(&read(file), None, None).unwrap().family,
                fam,
                "{file}"
            );
        }
    }

    #[test]
    fn private_keys_and_mismatched_pins_are_refused() {
        let e = key_from_pem(&read("rsa.key"), None, None).unwrap_err();
        assert!(e.contains("private key"), "{e}");
        let e = key_from_pem(&read("ec256.pub.pem"), None, Some(Algorithm::ES384)).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert!(key_from_pem(b"hello", None, None).is_err());
    }

    #[test]
    fn jwks_keys_keep_kid_and_alg_and_skip_encryption_keys() {
        let jwks = r#"{"keys":[
            {"kty":"oct","kid":"h1","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
            {"kty":"oct","kid":"enc","use":"enc","k":"c2VjcmV0"},
            {"kty":"OKP","crv":"Ed25519","kid":"e1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let set = keys_from_jwks(jwks).unwrap();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.keys[0].kid.as_deref(), Some("h1"));
        assert_eq!(set.keys[0].alg, Some(Algorithm::HS256));
        assert_eq!(set.keys[1].family, KeyFamily::Ed25519);
        assert!(
            keys_from_jwks(r#"{"keys":[{"kty":"oct","alg":"ES256","k":"c2VjcmV0"}]}"#).is_err()
        );
        assert!(keys_from_jwks("{}").is_err());
    }
}
