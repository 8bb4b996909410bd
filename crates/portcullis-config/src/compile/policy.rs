//! `[policy]`: the Cedar schema, the policy files (validated against the
//! schema in strict mode), the entities file, and the entity names requests
//! map onto. A policy error points at its own file and line.

use std::collections::HashMap;
use std::str::FromStr;

use portcullis_core::authz::EntityNames;
use portcullis_core::cedar_policy::{
    Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Schema, ValidationMode,
    Validator,
};
use toml::Spanned;

use super::Ctx;
use crate::diag::{ConfigError, Source};
use crate::raw::RawPolicy;

pub(crate) struct CompiledPolicy {
    pub policies: PolicySet,
    pub schema: Schema,
    pub entities: Entities,
    pub names: EntityNames,
    pub warnings: Vec<String>,
}

pub(crate) fn compile(
    ctx: &Ctx,
    raw: &Spanned<RawPolicy>,
) -> Result<CompiledPolicy, Vec<ConfigError>> {
    let raw_ref = raw.get_ref();
    let mut warnings = Vec::new();
    let schema = schema(ctx, &raw_ref.schema, &mut warnings).map_err(|e| vec![e])?;
    let (policies, sources) = policies(ctx, &raw_ref.files)?;
    validate(&schema, &policies, &sources, &mut warnings)?;
    let mut errors = Vec::new();
    let names = names(ctx, raw_ref, &schema)
        .map_err(|e| errors.push(e))
        .ok();
    let entities = entities(ctx, raw_ref.entities.as_ref(), &schema)
        .map_err(|e| errors.push(e))
        .ok();
    match (names, entities) {
        (Some(names), Some(entities)) if errors.is_empty() => Ok(CompiledPolicy {
            policies,
            schema,
            entities,
            names,
            warnings,
        }),
        _ => Err(errors),
    }
}

fn schema(
    ctx: &Ctx,
    file: &Spanned<String>,
    warnings: &mut Vec<String>,
) -> Result<Schema, ConfigError> {
    let (path, src) = ctx.read(file)?;
    if path.extension().is_some_and(|e| e == "json") {
        return Schema::from_json_str(&src.text)
            .map_err(|e| ConfigError::from_diagnostic(&src, 0, &e));
    }
    let (schema, warns) = Schema::from_cedarschema_str(&src.text)
        .map_err(|e| ConfigError::from_diagnostic(&src, 0, &e))?;
    warnings.extend(warns.map(|w| format!("{}: {w}", src.name)));
    Ok(schema)
}

/// Where each policy came from, for error locations.
type Sources = HashMap<PolicyId, (Source, usize)>;

fn policies(
    ctx: &Ctx,
    files: &Spanned<Vec<Spanned<String>>>,
) -> Result<(PolicySet, Sources), Vec<ConfigError>> {
    if files.get_ref().is_empty() {
        return Err(vec![
            ctx.err(files.span(), "no policy files are listed")
                .help("with no policy every request is denied; list at least one .cedar file"),
        ]);
    }
    let mut all = PolicySet::new();
    let mut sources: Sources = HashMap::new();
    let mut errors = Vec::new();
    for file in files.get_ref() {
        let (_, src) = match ctx.read(file) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let set = match PolicySet::from_str(&src.text) {
            Ok(s) => s,
            Err(e) => {
                errors.push(ConfigError::from_diagnostic(&src, 0, &e));
                continue;
            }
        };
        if set.templates().next().is_some() {
            errors.push(ConfigError::file(
                std::path::Path::new(&src.name),
                "policy templates are not supported; write static policies",
            ));
            continue;
        }
        for (p, offset) in in_source_order(&set, &src.text) {
            let id = match p.annotation("id") {
                Some(id) => id.to_owned(),
                None => src.location(offset).rsplit_once(':').map_or_else(
                    || src.name.clone(),
                    |(file_line, _col)| short_name(file_line),
                ),
            };
            let id = PolicyId::new(id);
            if let Err(e) = check_annotations(&src, offset, p) {
                errors.push(e);
            }
            if let Some((other_src, other_off)) = sources.get(&id) {
                errors.push(
                    ConfigError::at(
                        &src,
                        offset..offset + 6,
                        format!("policy id {:?} is used twice", id.to_string()),
                    )
                    .help(format!(
                        "the other is at {}; give each policy a unique @id",
                        other_src.location(*other_off)
                    )),
                );
                continue;
            }
            if let Err(e) = all.add(p.new_id(id.clone())) {
                errors.push(ConfigError::at(&src, offset..offset, e.to_string()));
                continue;
            }
            sources.insert(id, (src.clone(), offset));
        }
    }
    if errors.is_empty() {
        Ok((all, sources))
    } else {
        Err(errors)
    }
}

/// The file's policies in the order written, each with its byte offset.
/// Cedar numbers parsed policies `policy0`, `policy1`, ... in source order;
/// searching each one's text after the previous one's keeps two identical
/// policies at their own places.
fn in_source_order<'a>(set: &'a PolicySet, text: &str) -> Vec<(&'a Policy, usize)> {
    let mut parsed: Vec<&Policy> = set.policies().collect();
    parsed.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let mut from = 0;
    parsed
        .into_iter()
        .map(|p| {
            let found = p
                .to_cedar()
                .and_then(|t| text.get(from..)?.find(&t).map(|i| (from + i, t.len())));
            let offset = found.map_or(from, |(at, len)| {
                from = at + len;
                at
            });
            (p, offset)
        })
        .collect()
}

/// `policies/users.cedar:12` from `/abs/dir/policies/users.cedar:12`: keep
/// the file name and line, which is what an operator searches for.
fn short_name(file_line: &str) -> String {
    std::path::Path::new(file_line).file_name().map_or_else(
        || file_line.to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn check_annotations(src: &Source, offset: usize, p: &Policy) -> Result<(), ConfigError> {
    if let Some(code) = p.annotation("error").filter(|c| !super::is_error_code(c)) {
        return Err(ConfigError::at(
            src,
            offset..offset + 6,
            format!("@error({code:?}) is not a valid error code"),
        )
        .help("error codes are identifiers such as InsufficientPermissions"));
    }
    if let Some(v) = p
        .annotation("conceal")
        .filter(|v| !v.is_empty() && *v != "true")
    {
        return Err(ConfigError::at(
            src,
            offset..offset + 6,
            format!("@conceal({v:?}) is ambiguous"),
        )
        .help("write @conceal (or @conceal(\"true\")); remove it to not conceal"));
    }
    if p.annotation("message").is_some_and(|m| m.trim().is_empty()) {
        return Err(
            ConfigError::at(src, offset..offset + 6, "@message is empty")
                .help("write the sentence the client should read, or remove the annotation"),
        );
    }
    Ok(())
}

fn validate(
    schema: &Schema,
    policies: &PolicySet,
    sources: &Sources,
    warnings: &mut Vec<String>,
) -> Result<(), Vec<ConfigError>> {
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    for w in result.validation_warnings() {
        warnings.push(w.to_string());
    }
    let errors: Vec<ConfigError> = result
        .validation_errors()
        .map(|e| match sources.get(e.policy_id()) {
            Some((src, _)) => ConfigError::from_diagnostic(src, 0, e),
            None => ConfigError::file(std::path::Path::new("policy"), e.to_string()),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn entity_type(
    ctx: &Ctx,
    schema: &Schema,
    raw: Option<&Spanned<String>>,
    default: &str,
) -> Result<EntityTypeName, ConfigError> {
    let (text, span) = raw.map_or((default, 0..0), |s| (s.get_ref().as_str(), s.span()));
    let t = EntityTypeName::from_str(text).map_err(|e| {
        ctx.err(
            span.clone(),
            format!("{text:?} is not an entity type name: {e}"),
        )
    })?;
    if !schema.entity_types().any(|s| s == &t) {
        return Err(ctx
            .err(
                span,
                format!("entity type {t} is not declared in the schema"),
            )
            .help(format!(
                "declare `entity {t};` in the schema, or set this name in [policy]"
            )));
    }
    Ok(t)
}

fn names(ctx: &Ctx, raw: &RawPolicy, schema: &Schema) -> Result<EntityNames, ConfigError> {
    let principal_type = entity_type(ctx, schema, raw.principal_type.as_ref(), "User")?;
    let role_type = entity_type(ctx, schema, raw.role_type.as_ref(), "Role")?;
    let (text, span) = raw
        .anonymous_principal
        .as_ref()
        .map_or(("Anonymous::\"anonymous\"", 0..0), |s| {
            (s.get_ref().as_str(), s.span())
        });
    let anonymous = EntityUid::from_str(text).map_err(|e| {
        ctx.err(span.clone(), format!("{text:?} is not an entity uid: {e}"))
            .help("write it as Type::\"id\"")
    })?;
    let anon_type = anonymous.type_name().to_string();
    entity_type(ctx, schema, Some(&Spanned::new(span, anon_type)), "")?;
    Ok(EntityNames {
        principal_type,
        role_type,
        anonymous,
    })
}

fn entities(
    ctx: &Ctx,
    file: Option<&Spanned<String>>,
    schema: &Schema,
) -> Result<Entities, ConfigError> {
    let base = match file {
        None => Entities::empty(),
        Some(f) => {
            let (path, src) = ctx.read(f)?;
            Entities::from_json_str(&src.text, Some(schema)).map_err(|e| {
                let mut msg = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    msg.push_str(": ");
                    msg.push_str(&c.to_string());
                    cause = c.source();
                }
                ConfigError::file(&path, msg)
                    .help("entities are in Cedar's JSON entity format and must match the schema")
            })?
        }
    };
    let actions = schema
        .action_entities()
        .map_err(|e| ConfigError::file(std::path::Path::new("schema"), e.to_string()))?;
    base.add_entities(actions.iter().cloned(), None)
        .map_err(|e| {
            ConfigError::file(
                std::path::Path::new("entities"),
                format!("the entities clash with the schema's actions: {e}"),
            )
        })
}
