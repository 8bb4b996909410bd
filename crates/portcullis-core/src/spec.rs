//! What a route says beyond where it matches: its action, how its resource is
//! built, its authentication mode, its scopes, concealment and denial text.

use std::sync::Arc;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use crate::authn::AuthMode;
use crate::route::{Segment, Template};

/// A route's decision settings.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The route's name (logs, `explain`, the Cedar context's `route`).
    pub name: Arc<str>,
    /// The path template as written (for the decision record).
    pub path: Arc<str>,
    /// The Cedar action.
    pub action: EntityUid,
    /// How the resource is built.
    pub resource: ResourceTemplate,
    /// Whether an identity is needed.
    pub auth: AuthMode,
    /// OAuth scopes a token must carry (checked before the policy).
    pub scopes: Vec<String>,
    /// Whether denials (and 405) look like a 404.
    pub conceal: bool,
    /// The code for a denial no policy annotation explains.
    pub deny_code: Option<String>,
    /// The message for a denial no policy annotation explains.
    pub deny_message: Option<String>,
}

/// A resource entity built from path parameters: a type and an id template
/// such as `{id}` or `report-{id}`.
#[derive(Debug, Clone)]
pub struct ResourceTemplate {
    type_name: EntityTypeName,
    parts: Vec<IdPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IdPart {
    Text(String),
    Param(String),
}

impl ResourceTemplate {
    /// Parse an id template against the route's path template. Every `{name}`
    /// must be a parameter of the path.
    pub fn parse(type_name: EntityTypeName, id: &str, path: &Template) -> Result<Self, String> {
        let names: Vec<&str> = path
            .segments()
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) | Segment::Tail(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        let tails: Vec<&str> = path
            .segments()
            .iter()
            .filter_map(|s| match s {
                Segment::Tail(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let has_tail = |parts: &[IdPart]| {
            parts
                .iter()
                .any(|p| matches!(p, IdPart::Param(n) if tails.contains(&n.as_str())))
        };
        let mut parts = Vec::new();
        let mut rest = id;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(IdPart::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in resource id {id:?}"))?;
            let name = &rest[open + 1..open + close];
            if !names.contains(&name) {
                return Err(format!(
                    "resource id {id:?} uses {{{name}}}, which is not a parameter of path {:?}",
                    path.as_str()
                ));
            }
            // Parameter values never hold '/', so '/' is the one separator
            // that keeps `{a}-{b}` style collisions out (`a-b` + `c` vs `a` + `b-c`).
            let separated = match parts.last() {
                Some(IdPart::Param(_)) => false,
                Some(IdPart::Text(t)) => {
                    !parts.iter().any(|p| matches!(p, IdPart::Param(_))) || t.contains('/')
                }
                None => true,
            };
            if !separated {
                return Err(format!(
                    "resource id {id:?}: parameters must be separated by '/', or two paths could build the same resource"
                ));
            }
            if has_tail(&parts) {
                return Err(format!(
                    "resource id {id:?}: a {{*tail}} parameter must come last"
                ));
            }
            parts.push(IdPart::Param(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched '}}' in resource id {id:?}"));
        }
        if !rest.is_empty() {
            if has_tail(&parts) {
                return Err(format!(
                    "resource id {id:?}: nothing may follow a {{*tail}} parameter"
                ));
            }
            parts.push(IdPart::Text(rest.to_owned()));
        }
        Ok(ResourceTemplate { type_name, parts })
    }

    /// A fixed resource (no parameters).
    pub fn fixed(type_name: EntityTypeName, id: &str) -> Self {
        ResourceTemplate {
            type_name,
            parts: vec![IdPart::Text(id.to_owned())],
        }
    }

    /// The resource entity for these decoded parameters.
    pub fn build(&self, params: &[(String, String)]) -> EntityUid {
        let mut id = String::new();
        for part in &self.parts {
            match part {
                IdPart::Text(t) => id.push_str(t),
                IdPart::Param(name) => {
                    if let Some((_, v)) = params.iter().find(|(n, _)| n == name) {
                        id.push_str(v);
                    }
                }
            }
        }
        EntityUid::from_type_name_and_id(self.type_name.clone(), EntityId::new(id))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn ty() -> EntityTypeName {
        EntityTypeName::from_str("Doc").unwrap()
    }

    #[test]
    fn ids_are_built_from_decoded_parameters() {
        let t = Template::parse("/orgs/{org}/docs/{*path}").unwrap();
        let r = ResourceTemplate::parse(ty(), "{org}/{path}", &t).unwrap();
        let uid = r.build(&[
            ("org".into(), "acme".into()),
            ("path".into(), "a b/c".into()),
        ]);
        assert_eq!(uid.to_string(), r#"Doc::"acme/a b/c""#);
    }

    #[test]
    fn ids_that_two_paths_could_share_are_refused() {
        let t = Template::parse("/orgs/{org}/teams/{team}/{*rest}").unwrap();
        for bad in [
            "{org}-{team}",
            "{org}{team}",
            "{rest}/{org}",
            "{rest}.json",
            "{nope}",
            "{org",
            "org}",
        ] {
            assert!(ResourceTemplate::parse(ty(), bad, &t).is_err(), "{bad}");
        }
        for good in [
            "{org}/{team}",
            "team-{team}",
            "{org}/{team}/{rest}",
            "fixed",
        ] {
            assert!(ResourceTemplate::parse(ty(), good, &t).is_ok(), "{good}");
        }
    }
}
