//! Stage 7: the route table. Matches a canonical path (and host, and method)
//! to the route that names the Cedar action, the resource and the route's
//! authentication and denial settings.
//!
//! Precedence, most specific first: a route for the request's host beats a
//! route for any host; then, segment by segment from the left, a literal beats
//! a `{param}`, which beats a `{*tail}`, and a template that ends where the
//! path ends beats a `{*tail}` matching the empty rest. Two routes of the same shape (same
//! literals, parameters and tail in the same places, same host) whose method
//! sets overlap have no clear winner and are refused when the table is built.

mod template;
mod trie;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use http::Method;

pub use template::{Segment, Template, TemplateError};
use trie::Trie;

/// Which methods a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// Every method.
    Any,
    /// These methods (GET implies HEAD).
    Only(Vec<Method>),
}

impl Methods {
    /// Build a set; listing GET adds HEAD, as a GET handler answers HEAD too.
    pub fn only(mut methods: Vec<Method>) -> Self {
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        Methods::Only(methods)
    }

    /// Whether `m` is accepted.
    pub fn contains(&self, m: &Method) -> bool {
        match self {
            Methods::Any => true,
            Methods::Only(v) => v.contains(m),
        }
    }

    fn overlaps(&self, other: &Methods) -> bool {
        match (self, other) {
            (Methods::Any, _) | (_, Methods::Any) => true,
            (Methods::Only(a), Methods::Only(b)) => a.iter().any(|m| b.contains(m)),
        }
    }
}

/// Index of a route in the table, in the order routes were given.
pub type RouteId = usize;

/// What the route table says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// The route that serves this method and path, with decoded parameters.
    Found {
        /// The route.
        route: RouteId,
        /// Path parameters in template order, percent-decoded.
        params: Vec<(String, String)>,
    },
    /// Some route matches the path, none the method.
    MethodNotAllowed {
        /// The methods that would have matched, for `Allow`.
        allow: Vec<Method>,
        /// The routes whose path matched (any concealed one conceals the 405).
        routes: Vec<RouteId>,
    },
    /// No route matches the path.
    NotFound,
}

/// A route's matching part: where and for which methods it applies.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    /// Lower-cased host, or `None` for any host.
    pub host: Option<String>,
    /// Accepted methods.
    pub methods: Methods,
    /// The path template.
    pub template: Template,
}

/// Two routes that would compete for the same requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The route given first.
    pub first: RouteId,
    /// The route given later that conflicts with it.
    pub second: RouteId,
}

/// The compiled route table.
#[derive(Debug)]
pub struct RouteTable {
    patterns: Vec<RoutePattern>,
    by_host: HashMap<String, Trie>,
    any_host: Trie,
}

impl RouteTable {
    /// Build the table, refusing routes with no clear winner between them.
    pub fn new(patterns: Vec<RoutePattern>) -> Result<Self, Conflict> {
        for (j, b) in patterns.iter().enumerate() {
            for (i, a) in patterns[..j].iter().enumerate() {
                if a.host == b.host
                    && a.template.same_shape(&b.template)
                    && a.methods.overlaps(&b.methods)
                {
                    return Err(Conflict {
                        first: i,
                        second: j,
                    });
                }
            }
        }
        let mut by_host: HashMap<String, Trie> = HashMap::new();
        let mut any_host = Trie::default();
        for (id, p) in patterns.iter().enumerate() {
            match &p.host {
                Some(h) => by_host
                    .entry(h.clone())
                    .or_default()
                    .insert(&p.template, id),
                None => any_host.insert(&p.template, id),
            }
        }
        Ok(RouteTable {
            patterns,
            by_host,
            any_host,
        })
    }

    /// Find the most specific route for this host, method and canonical path.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> RouteMatch {
        // `*` (OPTIONS *) and anything else that is not a path matches nothing.
        if !path.starts_with('/') {
            return RouteMatch::NotFound;
        }
        let segs = PathSegments::of(path);
        let tries = host
            .and_then(|h| self.by_host.get(h))
            .into_iter()
            .chain(std::iter::once(&self.any_host));
        for trie in tries.clone() {
            if let Some(id) =
                trie.first_match(&segs, &mut |id| self.patterns[id].methods.contains(method))
            {
                let params = self.patterns[id].template.params(&segs);
                return RouteMatch::Found { route: id, params };
            }
        }
        // The cold path: nothing serves this method; is the path known at all?
        let mut routes = Vec::new();
        for trie in tries {
            trie.first_match(&segs, &mut |id| {
                routes.push(id);
                false
            });
        }
        if routes.is_empty() {
            return RouteMatch::NotFound;
        }
        let mut allow: Vec<Method> = Vec::new();
        for id in &routes {
            if let Methods::Only(ms) = &self.patterns[*id].methods {
                allow.extend(ms.iter().cloned());
            }
        }
        allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allow.dedup();
        RouteMatch::MethodNotAllowed { allow, routes }
    }
}

/// A canonical path split for matching: its segments and whether it ends in `/`.
#[derive(Debug)]
pub struct PathSegments<'a> {
    /// The non-empty segments.
    pub segments: Vec<&'a str>,
    /// Whether the path ends with `/` (true for the root).
    pub trailing_slash: bool,
}

impl<'a> PathSegments<'a> {
    /// Split a canonical path.
    pub fn of(path: &'a str) -> Self {
        let body = path.strip_prefix('/').unwrap_or(path);
        // The root counts as ending in `/`, so `/{*rest}` matches it with an empty rest.
        let trailing_slash = body.is_empty() || body.ends_with('/');
        let body = body.strip_suffix('/').unwrap_or(body);
        let segments = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        PathSegments {
            segments,
            trailing_slash,
        }
    }
}
