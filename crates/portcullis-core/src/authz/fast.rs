//! A direct evaluator for the common shapes of Cedar conditions, in front of
//! Cedar's own.
//!
//! Cedar's evaluator returns every intermediate result as an owned
//! `PartialValue`, cloning attribute values and building a new value at
//! every step, and re-parses extension literals such as `ip("10.0.0.0/8")`
//! each time it meets them. Here a condition is translated once, at load,
//! into a tree whose literals, slots and constant extension calls are
//! already values, and evaluated by reference.
//!
//! It is an accelerator, never a second semantics: whenever it meets
//! something it does not model (an error of any kind, a residual, an
//! operator or type it does not handle), it gives up and the caller asks
//! Cedar's evaluator, whose answer and error messages stand. What it does
//! answer, it answers exactly as Cedar would; the differential test at the
//! bottom holds it to that.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy_core::ast::ExtensionFunction;
use cedar_policy_core::ast::{
    BinaryOp, Entity, EntityType, EntityUID, EntityUIDEntry, Expr, ExprKind, Literal, PartialValue,
    Pattern, SlotEnv, UnaryOp, Value, ValueKind, Var,
};
use cedar_policy_core::entities::{Dereference, Entities};
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;

/// A condition, translated.
#[derive(Debug)]
pub(super) enum Fast {
    /// A literal, a linked slot, `action` (the partition's), or a constant
    /// expression evaluated at load.
    Const(Value),
    Principal,
    Resource,
    /// `context.attr`.
    ContextAttr(SmolStr),
    /// `context has attr`.
    ContextHas(SmolStr),
    And(Box<Fast>, Box<Fast>),
    Or(Box<Fast>, Box<Fast>),
    Not(Box<Fast>),
    IsEmpty(Box<Fast>),
    If(Box<Fast>, Box<Fast>, Box<Fast>),
    Binary(BinaryOp, Box<Fast>, Box<Fast>),
    GetAttr(Box<Fast>, SmolStr),
    HasAttr(Box<Fast>, SmolStr),
    Is(Box<Fast>, EntityType),
    Like(Box<Fast>, Pattern),
    Call(&'static ExtensionFunction, Vec<Fast>),
}

/// What one evaluation reads: the request's variables and the entities.
pub(super) struct Scope<'a> {
    principal: Value,
    resource: Value,
    context: &'a BTreeMap<SmolStr, Value>,
    entities: &'a Entities,
    /// The principal's and the resource's entities, looked up once: most
    /// conditions read them, and a lookup hashes the whole uid.
    principal_entity: Found<'a>,
    resource_entity: Found<'a>,
}

/// An entity lookup's result.
#[derive(Clone, Copy)]
enum Found<'a> {
    Data(&'a Entity),
    Missing,
    Residual,
}

fn find<'a>(entities: &'a Entities, uid: &EntityUID) -> Found<'a> {
    match entities.entity(uid) {
        Dereference::Data(e) => Found::Data(e),
        Dereference::NoSuchEntity => Found::Missing,
        Dereference::Residual(_) => Found::Residual,
    }
}

impl<'a> Scope<'a> {
    /// `None` when the request is not fully known (a residual context or
    /// an unknown variable): Cedar's evaluator handles those.
    pub(super) fn new(
        request: &'a cedar_policy_core::ast::Request,
        entities: &'a Entities,
    ) -> Option<Self> {
        let var = |e: &EntityUIDEntry| match e {
            EntityUIDEntry::Known { euid, .. } => Some(Value::new(Arc::clone(euid), None)),
            EntityUIDEntry::Unknown { .. } => None,
        };
        let context = match request.context()? {
            cedar_policy_core::ast::Context::Value(map) => map.as_ref(),
            cedar_policy_core::ast::Context::RestrictedResidual(_) => return None,
        };
        let principal = var(request.principal())?;
        let resource = var(request.resource())?;
        let entity = |v: &Value| match v.value_kind() {
            ValueKind::Lit(Literal::EntityUID(uid)) => find(entities, uid),
            _ => Found::Residual,
        };
        Some(Scope {
            principal_entity: entity(&principal),
            resource_entity: entity(&resource),
            principal,
            resource,
            context,
            entities,
        })
    }
}

/// An intermediate result: a computed boolean, or a value borrowed from the
/// condition, the request or the entities. Two words, so that it comes back
/// in registers: an owned `Value` here cost a third of the evaluation in
/// stores and reloads.
#[derive(Clone, Copy)]
enum V<'a> {
    Bool(bool),
    Ref(&'a Value),
}

impl V<'_> {
    fn value(&self) -> Option<&Value> {
        match self {
            V::Bool(_) => None,
            V::Ref(v) => Some(v),
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            V::Bool(b) => Some(*b),
            _ => match self.value()?.value_kind() {
                ValueKind::Lit(Literal::Bool(b)) => Some(*b),
                _ => None,
            },
        }
    }

    fn as_long(&self) -> Option<i64> {
        match self.value()?.value_kind() {
            ValueKind::Lit(Literal::Long(n)) => Some(*n),
            _ => None,
        }
    }

    fn as_entity(&self) -> Option<&EntityUID> {
        match self.value()?.value_kind() {
            ValueKind::Lit(Literal::EntityUID(uid)) => Some(uid),
            _ => None,
        }
    }

    fn to_value(self) -> Value {
        match self {
            V::Bool(b) => Value::from(b),
            V::Ref(v) => v.clone(),
        }
    }
}

/// Cedar's `==`: structural, and never an error (values of different types
/// are unequal).
fn equal(a: &V<'_>, b: &V<'_>) -> bool {
    match (a, b) {
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Bool(x), other) | (other, V::Bool(x)) => other.as_bool() == Some(*x),
        _ => a.value() == b.value(),
    }
}

impl Fast {
    /// Translate a condition for requests on `action` (policies are
    /// partitioned by action, so it is a constant here), or `None` when it
    /// uses something this evaluator does not model (the policy is then
    /// always left to Cedar).
    pub(super) fn compile(e: &Expr, env: &SlotEnv, action: &EntityUID) -> Option<Fast> {
        let b = |e: &Expr| Fast::compile(e, env, action).map(Box::new);
        let fast = match e.expr_kind() {
            ExprKind::Lit(lit) => Fast::Const(Value::from(lit.clone())),
            ExprKind::Slot(id) => Fast::Const(Value::from(env.get(id)?.clone())),
            ExprKind::Var(Var::Principal) => Fast::Principal,
            ExprKind::Var(Var::Action) => Fast::Const(Value::from(action.clone())),
            ExprKind::Var(Var::Resource) => Fast::Resource,
            ExprKind::Var(Var::Context) => return None,
            ExprKind::If {
                test_expr,
                then_expr,
                else_expr,
            } => Fast::If(b(test_expr)?, b(then_expr)?, b(else_expr)?),
            ExprKind::And { left, right } => match (b(left)?, b(right)?) {
                // `true && c` and `c && true` are `c` when `c` can only be
                // a boolean: the scope's `principal` and `resource` give
                // these.
                (l, r) if l.is_true() && r.is_boolean() => *r,
                (l, r) if r.is_true() && l.is_boolean() => *l,
                (l, r) => Fast::And(l, r),
            },
            ExprKind::Or { left, right } => Fast::Or(b(left)?, b(right)?),
            ExprKind::UnaryApp { op, arg } => match op {
                UnaryOp::Not => Fast::Not(b(arg)?),
                UnaryOp::IsEmpty => Fast::IsEmpty(b(arg)?),
                UnaryOp::Neg => return None,
            },
            ExprKind::BinaryApp { op, arg1, arg2 } => match op {
                BinaryOp::Eq
                | BinaryOp::Less
                | BinaryOp::LessEq
                | BinaryOp::In
                | BinaryOp::Contains
                | BinaryOp::ContainsAll
                | BinaryOp::ContainsAny => match (b(arg1)?, b(arg2)?) {
                    // `action == Action::"read"`, the scope of most policies.
                    (l, r) if *op == BinaryOp::Eq => match (*l, *r) {
                        (Fast::Const(x), Fast::Const(y)) => Fast::Const(Value::from(x == y)),
                        (l, r) => Fast::Binary(*op, Box::new(l), Box::new(r)),
                    },
                    (l, r) => Fast::Binary(*op, l, r),
                },
                _ => return None,
            },
            ExprKind::GetAttr { expr, attr } => match expr.expr_kind() {
                ExprKind::Var(Var::Context) => Fast::ContextAttr(attr.clone()),
                _ => Fast::GetAttr(b(expr)?, attr.clone()),
            },
            ExprKind::HasAttr { expr, attr } => match expr.expr_kind() {
                ExprKind::Var(Var::Context) => Fast::ContextHas(attr.clone()),
                _ => Fast::HasAttr(b(expr)?, attr.clone()),
            },
            ExprKind::Is { expr, entity_type } => Fast::Is(b(expr)?, entity_type.clone()),
            ExprKind::Like { expr, pattern } => Fast::Like(b(expr)?, pattern.clone()),
            ExprKind::ExtensionFunctionApp { fn_name, args } => {
                let f = Extensions::all_available().func(fn_name).ok()?;
                let args = args
                    .iter()
                    .map(|a| Fast::compile(a, env, action))
                    .collect::<Option<Vec<_>>>()?;
                let consts: Option<Vec<Value>> = args
                    .iter()
                    .map(|a| match a {
                        Fast::Const(v) => Some(v.clone()),
                        _ => None,
                    })
                    .collect();
                match consts {
                    // `ip("10.0.0.0/8")`, `decimal("1.5")`: made once. One
                    // that fails is left to Cedar, to report at each call.
                    Some(vals) => match f.call(&vals).ok()? {
                        PartialValue::Value(v) => Fast::Const(v),
                        PartialValue::Residual(_) => return None,
                    },
                    None => Fast::Call(f, args),
                }
            }
            ExprKind::Set(items) => Fast::Const(Value::set(
                items
                    .iter()
                    .map(|i| match Fast::compile(i, env, action)? {
                        Fast::Const(v) => Some(v),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
                None,
            )),
            ExprKind::Record(map) => Fast::Const(Value::record(
                map.iter()
                    .map(|(k, i)| match Fast::compile(i, env, action)? {
                        Fast::Const(v) => Some((k.clone(), v)),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
                None,
            )),
            _ => return None,
        };
        Some(fast)
    }

    fn is_true(&self) -> bool {
        matches!(self, Fast::Const(v) if v.value_kind() == &ValueKind::Lit(Literal::Bool(true)))
    }

    /// Whether every value this node evaluates to (when it does not fail)
    /// is a boolean.
    fn is_boolean(&self) -> bool {
        match self {
            Fast::Const(v) => matches!(v.value_kind(), ValueKind::Lit(Literal::Bool(_))),
            Fast::ContextHas(_)
            | Fast::And(..)
            | Fast::Or(..)
            | Fast::Not(_)
            | Fast::IsEmpty(_)
            | Fast::Binary(..)
            | Fast::HasAttr(..)
            | Fast::Is(..)
            | Fast::Like(..) => true,
            Fast::If(_, then, otherwise) => then.is_boolean() && otherwise.is_boolean(),
            _ => false,
        }
    }

    /// Evaluate a condition: `Some(satisfied)`, or `None` to ask Cedar.
    pub(super) fn satisfied(&self, s: &Scope<'_>) -> Option<bool> {
        self.eval(s)?.as_bool()
    }

    fn eval<'a>(&'a self, s: &'a Scope<'a>) -> Option<V<'a>> {
        Some(match self {
            Fast::Const(v) => V::Ref(v),
            Fast::Principal => V::Ref(&s.principal),
            Fast::Resource => V::Ref(&s.resource),
            Fast::ContextAttr(a) => V::Ref(s.context.get(a)?),
            Fast::ContextHas(a) => V::Bool(s.context.contains_key(a)),
            Fast::And(l, r) => V::Bool(l.eval(s)?.as_bool()? && r.eval(s)?.as_bool()?),
            Fast::Or(l, r) => V::Bool(l.eval(s)?.as_bool()? || r.eval(s)?.as_bool()?),
            Fast::Not(a) => V::Bool(!a.eval(s)?.as_bool()?),
            Fast::IsEmpty(a) => match a.eval(s)?.value()?.value_kind() {
                ValueKind::Set(set) => V::Bool(set.is_empty()),
                _ => return None,
            },
            Fast::If(test, then, otherwise) => {
                if test.eval(s)?.as_bool()? {
                    then.eval(s)?
                } else {
                    otherwise.eval(s)?
                }
            }
            Fast::Binary(op, left, right) => {
                // Cedar evaluates both operands before the operator.
                let (a, b) = (left.eval(s)?, right.eval(s)?);
                V::Bool(binary(*op, left, &a, &b, s)?)
            }
            Fast::GetAttr(base, attr) => match base.eval(s)? {
                V::Bool(_) => return None,
                V::Ref(v) => V::Ref(attribute(base, v, attr, s)?),
            },
            Fast::HasAttr(base, attr) => match base.eval(s)?.value()?.value_kind() {
                ValueKind::Record(r) => V::Bool(r.contains_key(attr)),
                ValueKind::Lit(Literal::EntityUID(uid)) => match s.entity(base, uid) {
                    Found::Data(e) => V::Bool(e.get(attr).is_some()),
                    Found::Missing => V::Bool(false),
                    Found::Residual => return None,
                },
                _ => return None,
            },
            Fast::Is(a, ty) => V::Bool(a.eval(s)?.as_entity()?.entity_type() == ty),
            Fast::Like(a, pattern) => match a.eval(s)?.value()?.value_kind() {
                ValueKind::Lit(Literal::String(text)) => V::Bool(pattern.wildcard_match(text)),
                _ => return None,
            },
            Fast::Call(f, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(s)?.to_value());
                }
                // Calls made per request return booleans (`isInRange`,
                // `isLoopback`, `lessThan`…); a value made per request, such
                // as `ip(context.s)`, is left to Cedar.
                match f.call(&vals).ok()? {
                    PartialValue::Value(v) => match v.value_kind() {
                        ValueKind::Lit(Literal::Bool(b)) => V::Bool(*b),
                        _ => return None,
                    },
                    PartialValue::Residual(_) => return None,
                }
            }
        })
    }
}

impl<'a> Scope<'a> {
    /// The entity `uid`, which `node` evaluated to.
    fn entity(&self, node: &Fast, uid: &EntityUID) -> Found<'a> {
        match node {
            Fast::Principal => self.principal_entity,
            Fast::Resource => self.resource_entity,
            _ => find(self.entities, uid),
        }
    }
}

/// `value.attr` on a record or an entity (`base` evaluated to `v`), where
/// Cedar would not fail.
fn attribute<'a>(base: &Fast, v: &'a Value, attr: &SmolStr, s: &'a Scope<'a>) -> Option<&'a Value> {
    match v.value_kind() {
        ValueKind::Record(r) => r.get(attr),
        ValueKind::Lit(Literal::EntityUID(uid)) => match s.entity(base, uid) {
            Found::Data(e) => match e.get(attr)? {
                PartialValue::Value(v) => Some(v),
                PartialValue::Residual(_) => None,
            },
            Found::Missing | Found::Residual => None,
        },
        _ => None,
    }
}

fn binary(op: BinaryOp, node: &Fast, a: &V<'_>, b: &V<'_>, s: &Scope<'_>) -> Option<bool> {
    Some(match op {
        BinaryOp::Eq => equal(a, b),
        // Longs only: Cedar also orders datetimes and durations, and fails
        // on anything else; both are left to it.
        BinaryOp::Less => a.as_long()? < b.as_long()?,
        BinaryOp::LessEq => a.as_long()? <= b.as_long()?,
        BinaryOp::In => {
            let uid = a.as_entity()?;
            let entity = match s.entity(node, uid) {
                Found::Data(e) => Some(e),
                Found::Missing => None,
                Found::Residual => return None,
            };
            let within = |other: &EntityUID| {
                uid == other || entity.is_some_and(|e| e.is_descendant_of(other))
            };
            match b.value()?.value_kind() {
                ValueKind::Lit(Literal::EntityUID(other)) => within(other),
                ValueKind::Set(set) => {
                    // Cedar requires every member to be an entity first.
                    if !set
                        .iter()
                        .all(|m| matches!(m.value_kind(), ValueKind::Lit(Literal::EntityUID(_))))
                    {
                        return None;
                    }
                    set.iter().any(|m| {
                        matches!(m.value_kind(),
                            ValueKind::Lit(Literal::EntityUID(other)) if within(other.as_ref()))
                    })
                }
                _ => return None,
            }
        }
        BinaryOp::Contains => match a.value()?.value_kind() {
            ValueKind::Set(set) => match b {
                V::Ref(v) => set.contains(v),
                V::Bool(x) => set.contains(&Value::from(*x)),
            },
            _ => return None,
        },
        BinaryOp::ContainsAll | BinaryOp::ContainsAny => {
            match (a.value()?.value_kind(), b.value()?.value_kind()) {
                (ValueKind::Set(x), ValueKind::Set(y)) if op == BinaryOp::ContainsAll => {
                    y.is_subset(x)
                }
                (ValueKind::Set(x), ValueKind::Set(y)) => !x.is_disjoint(y),
                _ => return None,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::{Context, Entities as PublicEntities, EntityUid, Policy, Request};
    use cedar_policy_core::ast;
    use cedar_policy_core::evaluator::Evaluator;
    use proptest::prelude::*;

    use super::*;

    const ENTITIES: &str = r#"[
        {"uid": {"type": "User", "id": "alice"}, "parents": [{"type": "Role", "id": "admin"}],
         "attrs": {"dept": "eng", "n": 3, "tags": ["a", "c"], "boss": {"type": "User", "id": "bob"},
                   "addr": {"__extn": {"fn": "ip", "arg": "10.1.0.0/16"}}, "rec": {"a": 1}}},
        {"uid": {"type": "User", "id": "bob"}, "parents": [], "attrs": {}},
        {"uid": {"type": "Role", "id": "admin"}, "parents": [{"type": "Role", "id": "staff"}], "attrs": {}},
        {"uid": {"type": "Role", "id": "staff"}, "parents": [], "attrs": {}},
        {"uid": {"type": "Item", "id": "1"}, "parents": [], "attrs": {"owner": {"type": "User", "id": "alice"}}},
        {"uid": {"type": "Item", "id": "2"}, "parents": [], "attrs": {"owner": {"type": "User", "id": "bob"}}},
        {"uid": {"type": "Action", "id": "read"}, "parents": [], "attrs": {}}
    ]"#;

    fn uid(s: &str) -> EntityUid {
        EntityUid::from_str(s).unwrap()
    }

    fn request(principal: &str, resource: &str) -> Request {
        let ctx = Context::from_json_value(
            serde_json::json!({
                "ip": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}},
                "n": 5, "s": "hello", "flag": true, "set": ["a", "b"], "rec": {"a": 1},
                "roles": [{"__entity": {"type": "Role", "id": "staff"}}]
            }),
            None,
        )
        .unwrap();
        Request::new(
            uid(principal),
            uid("Action::\"read\""),
            uid(resource),
            ctx,
            None,
        )
        .unwrap()
    }

    /// Which evaluator answered a condition.
    #[derive(Debug, PartialEq)]
    enum Went {
        /// The condition does not parse (a mistake in the test).
        Unparsed,
        /// The direct evaluator, with Cedar's answer.
        Direct,
        /// Cedar's evaluator; whether it failed.
        ToCedar { failed: bool },
    }

    /// Cedar's answer and ours for one condition: ours must be Cedar's
    /// whenever it gives one.
    fn agree(expr: &str, principal: &str, resource: &str) -> Went {
        let src = format!("permit (principal, action, resource) when {{ {expr} }};");
        let Ok(policy) = Policy::parse(None, &src) else {
            return Went::Unparsed;
        };
        let entities = PublicEntities::from_json_str(ENTITIES, None).unwrap();
        let entities = AsRef::<cedar_policy_core::entities::Entities>::as_ref(&entities);
        let request = request(principal, resource);
        let request = AsRef::<ast::Request>::as_ref(&request);
        let core = AsRef::<ast::Policy>::as_ref(&policy);
        let condition = core.condition();
        let cedar = Evaluator::new(request.clone(), entities, Extensions::all_available())
            .interpret(&condition, core.env());
        let action = request.action().uid().unwrap();
        let scope = Scope::new(request, entities).unwrap();
        let Some(ours) =
            Fast::compile(&condition, core.env(), action).and_then(|fast| fast.satisfied(&scope))
        else {
            return Went::ToCedar {
                failed: cedar.is_err(),
            };
        };
        match cedar {
            Ok(v) => assert_eq!(
                v.value_kind(),
                &ValueKind::Lit(Literal::Bool(ours)),
                "`{expr}` for {principal} on {resource}: Cedar {v}, ours {ours}"
            ),
            Err(e) => {
                panic!("`{expr}` for {principal} on {resource}: Cedar failed ({e}), ours {ours}")
            }
        }
        Went::Direct
    }

    #[test]
    fn the_common_shapes_are_answered_directly_and_as_cedar_answers() {
        let shapes = [
            "context.flag || false",
            "principal in Role::\"staff\"",
            "principal in [Role::\"x\", Role::\"admin\"]",
            "principal in context.roles",
            "resource.owner == principal",
            "resource.owner == principal && context.n > 0",
            "context.ip.isInRange(ip(\"10.1.0.0/16\")) || principal in Role::\"suspended\"",
            "context.ip.isInRange(principal.addr)",
            "principal has dept && principal.dept == \"eng\"",
            "context.s == \"hello\" && context.s != \"GET\"",
            "context.set.contains(\"a\")",
            "context.set.containsAll([\"a\"]) && context.set.containsAny([\"z\", \"b\"])",
            "resource is Item && !(principal is Role)",
            "context.s like \"he*o\"",
            "if context.flag then context.n <= 5 else false",
            "principal.rec == {a: 1} && context.rec == principal.rec",
            "principal.tags.isEmpty() || principal.boss has dept",
            "context has n && !(context has nope)",
        ];
        for shape in shapes {
            for (p, r) in [
                ("User::\"alice\"", "Item::\"1\""),
                ("User::\"bob\"", "Item::\"2\""),
                ("User::\"carol\"", "Item::\"1\""),
            ] {
                // Only `alice` has attributes (`carol` is not even in the
                // entities): reading one of the others' fails in Cedar, and
                // must be left to it.
                let went = agree(shape, p, r);
                assert_ne!(went, Went::Unparsed, "`{shape}`");
                if p == "User::\"alice\"" || !shape.contains("principal.") {
                    assert_eq!(went, Went::Direct, "`{shape}` for {p}");
                }
            }
        }
    }

    #[test]
    fn what_fails_in_cedar_is_left_to_cedar() {
        for expr in [
            "context.nope == 1",
            "principal.nope == 1",
            "User::\"carol\".dept == \"x\"",
            "context.n < \"a\"",
            "context.s && true",
            "1 in Role::\"x\"",
            "principal in [Role::\"x\", 1]",
            "context.ip.isInRange(\"x\")",
            "ip(\"not an ip\").isLoopback()",
        ] {
            let went = agree(expr, "User::\"alice\"", "Item::\"1\"");
            assert_eq!(went, Went::ToCedar { failed: true }, "`{expr}`");
        }
        // Not modelled, and fine in Cedar: Cedar answers.
        for expr in ["context.n + 1 > 0", "-context.n < 0", "principal has rec.a"] {
            let went = agree(expr, "User::\"alice\"", "Item::\"1\"");
            assert_eq!(went, Went::ToCedar { failed: false }, "`{expr}`");
        }
    }

    fn pick(items: &[&'static str]) -> BoxedStrategy<String> {
        prop::sample::select(items.to_vec())
            .prop_map(str::to_owned)
            .boxed()
    }

    /// A value of the given kind most of the time, anything at all (often
    /// something that fails) the rest.
    fn of(kind: &[&'static str]) -> BoxedStrategy<String> {
        let junk = pick(&[
            "context.nope",
            "principal.nope",
            "context",
            "true",
            "5",
            "\"a\"",
            "[1, \"a\"]",
            "{a: 1}",
            "decimal(\"1.5\")",
            "User::\"carol\"",
            "context.rec",
            "principal.rec",
        ]);
        prop_oneof![4 => pick(kind), 1 => junk].boxed()
    }

    const ENTITY: &[&str] = &[
        "principal",
        "resource",
        "action",
        "principal.boss",
        "resource.owner",
        "User::\"alice\"",
        "User::\"bob\"",
        "Role::\"admin\"",
        "Role::\"staff\"",
        "Item::\"1\"",
    ];
    const LONG: &[&str] = &["context.n", "principal.n", "0", "5", "-3"];
    const TEXT: &[&str] = &[
        "context.s",
        "principal.dept",
        "\"eng\"",
        "\"hello\"",
        "\"a\"",
    ];
    const SET: &[&str] = &[
        "context.set",
        "principal.tags",
        "context.roles",
        "[Role::\"admin\", Role::\"x\"]",
        "[\"a\", \"b\"]",
        "[]",
    ];
    const IP: &[&str] = &[
        "context.ip",
        "principal.addr",
        "ip(\"10.1.0.0/16\")",
        "ip(\"10.1.2.3\")",
    ];

    fn any() -> BoxedStrategy<String> {
        prop_oneof![of(ENTITY), of(LONG), of(TEXT), of(SET), of(IP)].boxed()
    }

    fn condition() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            (of(ENTITY), prop_oneof![of(ENTITY), of(SET)]).prop_map(|(a, b)| format!("{a} in {b}")),
            (of(LONG), pick(&["<", "<=", ">", ">="]), of(LONG))
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (any(), pick(&["==", "!="]), any()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            of(TEXT).prop_map(|a| format!("{a} like \"*l*\"")),
            (of(SET), any()).prop_map(|(a, b)| format!("{a}.contains({b})")),
            (of(SET), pick(&["containsAll", "containsAny"]), of(SET))
                .prop_map(|(a, m, b)| format!("{a}.{m}({b})")),
            of(SET).prop_map(|a| format!("{a}.isEmpty()")),
            (of(IP), of(IP)).prop_map(|(a, b)| format!("{a}.isInRange({b})")),
            of(IP).prop_map(|a| format!("{a}.isLoopback()")),
            (
                prop_oneof![of(ENTITY), pick(&["context", "context.rec"])],
                pick(&["dept", "n", "owner", "a", "ip", "nope"])
            )
                .prop_map(|(a, f)| format!("{a} has {f}")),
            (of(ENTITY), pick(&["User", "Role", "Item"])).prop_map(|(a, t)| format!("{a} is {t}")),
            pick(&["context.flag", "true", "false", "context.s"]),
        ];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                (inner.clone(), pick(&["&&", "||"]), inner.clone())
                    .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
                // Computed booleans and branches as operands, not only as
                // conditions: `(true && c) == c`, `[c, true].contains(d)`.
                (
                    inner.clone(),
                    pick(&["==", "!="]),
                    prop_oneof![inner.clone(), any()]
                )
                    .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| format!("[{a}, true].contains({b})")),
                (inner.clone(), any(), any())
                    .prop_map(|(c, a, b)| format!("(if {c} then {a} else {b}) == {a}")),
                inner
                    .clone()
                    .prop_map(|a| format!("(true && ({a})) == ({a})")),
                inner.clone().prop_map(|a| format!("!({a})")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(a, b, c)| format!("if {a} then {b} else {c}")),
            ]
        })
    }

    /// Random conditions, most of them ill-typed, over principals with and
    /// without entities: every direct answer must be Cedar's, and enough
    /// of them must be answered directly for that to mean something.
    #[test]
    fn every_direct_answer_is_cedars() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let principals = [
            "User::\"alice\"",
            "User::\"bob\"",
            "User::\"carol\"",
            "Role::\"admin\"",
        ];
        let resources = ["Item::\"1\"", "Item::\"2\"", "Item::\"9\""];
        let (mut answered, cases) = (0, 3000);
        for i in 0..cases {
            let e = condition().new_tree(&mut runner).unwrap().current();
            match agree(&e, principals[i % 4], resources[i % 3]) {
                Went::Direct => answered += 1,
                Went::Unparsed => panic!("`{e}` does not parse"),
                Went::ToCedar { .. } => {}
            }
        }
        eprintln!("{answered} of {cases} answered directly");
        assert!(
            answered * 5 > cases,
            "only {answered} of {cases} answered directly"
        );
    }
}
