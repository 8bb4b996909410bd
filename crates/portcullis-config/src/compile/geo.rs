//! `[geoip]`: the country database, a MaxMind DB file read whole into
//! memory and checked at load, and the country rules that read it.

use std::net::IpAddr;
use std::sync::Arc;

use maxminddb::{PathElement, Reader};
use portcullis_core::network::{Country, CountryLookup, CountryRules, UnknownCountry};
use toml::Spanned;

use super::Ctx;
use crate::diag::ConfigError;
use crate::raw::RawConfig;

/// Countries from a MaxMind DB: the record's `country.iso_code`, else its
/// `registered_country.iso_code` (GeoIP2 and GeoLite2 Country and City,
/// DB-IP, and databases built the same way).
#[derive(Debug)]
pub struct MmdbCountries {
    reader: Reader<Vec<u8>>,
}

impl CountryLookup for MmdbCountries {
    fn country(&self, ip: IpAddr) -> Option<Country> {
        let found = self.reader.lookup(ip.to_canonical()).ok()?;
        let code = |field| {
            found
                .decode_path::<&str>(&[PathElement::Key(field), PathElement::Key("iso_code")])
                .ok()
                .flatten()
        };
        code("country")
            .or_else(|| code("registered_country"))
            .and_then(Country::parse)
    }
}

/// The database, if `[geoip]` names one.
pub(crate) fn open(ctx: &Ctx, raw: &RawConfig) -> Result<Option<Arc<MmdbCountries>>, ConfigError> {
    let Some(geo) = &raw.geoip else {
        return Ok(None);
    };
    let file = &geo.get_ref().database;
    let path = ctx.path(file.get_ref());
    let bytes = std::fs::read(&path).map_err(|e| {
        ctx.err(file.span(), format!("cannot read {}: {e}", path.display()))
            .help("paths are relative to the folder of the configuration file")
    })?;
    let bad = |e: maxminddb::MaxMindDbError| {
        ctx.err(
            file.span(),
            format!("{} is not a valid MaxMind DB file: {e}", path.display()),
        )
        .help("give a GeoIP2 or GeoLite2 Country or City database (.mmdb)")
    };
    let reader = Reader::from_source(bytes).map_err(bad)?;
    reader.verify().map_err(bad)?;
    Ok(Some(Arc::new(MmdbCountries { reader })))
}

/// The country rules of one gate, from its four settings. `have_db`: a
/// `[geoip]` database is named (whether or not it loaded; a failure to
/// load is reported once, by [`open`]).
pub(crate) struct RawRules<'a> {
    pub deny: &'a [Spanned<String>],
    pub allow: &'a [Spanned<String>],
    pub unknown: Option<&'a Spanned<String>>,
    pub message: Option<&'a String>,
    /// The table they are in, for errors about the table as a whole.
    pub at: std::ops::Range<usize>,
}

pub(crate) fn rules(
    ctx: &Ctx,
    raw: &RawRules<'_>,
    have_db: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<CountryRules> {
    if raw.deny.is_empty() && raw.allow.is_empty() && raw.unknown.is_none() {
        if raw.message.is_some() {
            errors.push(
                ctx.err(
                    raw.at.clone(),
                    "country_message is set, but there are no country rules for it",
                )
                .help("add deny_countries, allow_countries or unknown_country beside it"),
            );
        }
        return None;
    }
    if !have_db {
        let at = raw
            .deny
            .first()
            .or(raw.allow.first())
            .or(raw.unknown)
            .map_or(0..0, Spanned::span);
        errors.push(
            ctx.err(at, "country rules need a country database")
                .help("add [geoip] database = \"GeoLite2-Country.mmdb\""),
        );
        return None;
    }
    let mut codes = |list: &[Spanned<String>]| -> Vec<Country> {
        list.iter()
            .filter_map(|c| {
                let parsed = Country::parse(c.get_ref().trim());
                if parsed.is_none() {
                    errors.push(
                        ctx.err(c.span(), format!("{:?} is not a country code", c.get_ref()))
                            .help("write ISO 3166-1 alpha-2 codes, such as \"FR\" or \"US\""),
                    );
                }
                parsed
            })
            .collect()
    };
    let deny = codes(raw.deny);
    let allow = codes(raw.allow);
    let unknown = match raw.unknown.map(|u| (u, u.get_ref().as_str())) {
        None if allow.is_empty() => UnknownCountry::Allow,
        None => UnknownCountry::Deny,
        Some((_, "allow")) => UnknownCountry::Allow,
        Some((_, "deny")) => UnknownCountry::Deny,
        Some((u, other)) => {
            errors.push(ctx.err(u.span(), format!("{other:?}: use \"allow\" or \"deny\"")));
            UnknownCountry::Allow
        }
    };
    Some(CountryRules {
        deny,
        allow,
        unknown,
        message: raw.message.cloned(),
    })
}
