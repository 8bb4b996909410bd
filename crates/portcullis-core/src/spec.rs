//! What a route says beyond where it matches: its action, how its resource is
//! built, its authentication mode, its scopes, concealment and denial text.

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use crate::authn::AuthMode;
use crate::route::{Segment, Template};

/// A route's decision settings.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The route's name (logs, `explain`, the Cedar context's `route`).
    pub name: String,
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
            parts.push(IdPart::Param(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched '}}' in resource id {id:?}"));
        }
        if !rest.is_empty() {
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

    /// The resource's entity type.
    pub fn type_name(&self) -> &EntityTypeName {
        &self.type_name
    }
}
