//! A segment trie over templates. Matching walks it depth-first in precedence
//! order (literal, then parameter, then tail), so the first route accepted by
//! the caller's filter is the most specific one.

use std::collections::HashMap;

use super::{PathSegments, RouteId, Segment, Template};

#[derive(Debug, Default)]
pub(super) struct Trie {
    literal: HashMap<String, Trie>,
    param: Option<Box<Trie>>,
    /// Routes whose `{*tail}` starts at this depth.
    tail: Vec<RouteId>,
    /// Routes that end here without a trailing slash.
    end: Vec<RouteId>,
    /// Routes that end here with a trailing slash.
    end_slash: Vec<RouteId>,
}

impl Trie {
    pub(super) fn insert(&mut self, template: &Template, id: RouteId) {
        let mut node = self;
        for seg in template.segments() {
            node = match seg {
                Segment::Literal(l) => node.literal.entry(l.clone()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Box::default),
                Segment::Tail(_) => {
                    node.tail.push(id);
                    return;
                }
            };
        }
        if template.trailing_slash() {
            node.end_slash.push(id);
        } else {
            node.end.push(id);
        }
    }

    /// The first route (in precedence order) that matches the path and that
    /// `accept` takes. `accept` sees every path match until it says yes.
    pub(super) fn first_match(
        &self,
        path: &PathSegments<'_>,
        accept: &mut dyn FnMut(RouteId) -> bool,
    ) -> Option<RouteId> {
        self.walk(path, 0, accept)
    }

    fn walk(
        &self,
        path: &PathSegments<'_>,
        depth: usize,
        accept: &mut dyn FnMut(RouteId) -> bool,
    ) -> Option<RouteId> {
        if let Some(seg) = path.segments.get(depth) {
            if let Some(found) = self
                .literal
                .get(*seg)
                .and_then(|child| child.walk(path, depth + 1, accept))
            {
                return Some(found);
            }
            if let Some(found) = self
                .param
                .as_ref()
                .and_then(|child| child.walk(path, depth + 1, accept))
            {
                return Some(found);
            }
        } else {
            let ends = if path.trailing_slash {
                &self.end_slash
            } else {
                &self.end
            };
            if let Some(found) = ends.iter().copied().find(|id| accept(*id)) {
                return Some(found);
            }
        }
        let tail_fits = depth < path.segments.len() || path.trailing_slash;
        if tail_fits {
            return self.tail.iter().copied().find(|id| accept(*id));
        }
        None
    }
}
