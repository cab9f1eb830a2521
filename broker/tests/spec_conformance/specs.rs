//! Loading `openapi.yaml` and `asyncapi.yaml`, resolving their local `$ref`s,
//! and validating instances against their schemas.

use super::*;

pub(crate) fn spec_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../protocol-spec")
        .join(name)
}

pub(crate) fn load_yaml(name: &str) -> Value {
    let path = spec_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
    yaml_to_json(yaml)
}

/// YAML → JSON, turning non-string mapping keys (`200:`) into strings.
pub(crate) fn yaml_to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().expect("number"))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        Y::Number(n) => n.to_string(),
                        Y::Bool(b) => b.to_string(),
                        other => panic!("unsupported YAML mapping key {other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Replaces every `{"$ref": "#/..."}` by (a resolved copy of) its target.
pub(crate) fn resolve(root: &Value, v: &Value) -> Value {
    fn go(root: &Value, v: &Value, trail: &mut Vec<String>) -> Value {
        match v {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref") {
                    let reference = reference.as_str().expect("$ref is a string");
                    assert!(
                        !trail.iter().any(|r| r == reference),
                        "$ref cycle through {reference}: {trail:?}"
                    );
                    let pointer = reference
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("only local $refs are supported: {reference}"));
                    let target = root
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("dangling $ref {reference}"));
                    trail.push(reference.to_string());
                    let out = go(root, target, trail);
                    trail.pop();
                    return out;
                }
                Value::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), go(root, v, trail)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| go(root, v, trail)).collect()),
            other => other.clone(),
        }
    }
    go(root, v, &mut Vec::new())
}

#[derive(Clone, Copy)]
pub(crate) enum Dialect {
    /// OpenAPI 3.1 schemas are JSON Schema 2020-12.
    OpenApi,
    /// AsyncAPI 3.0 schemas are a superset of draft 7.
    AsyncApi,
}

/// The validation errors of `instance` against `schema` (empty when valid).
pub(crate) fn schema_errors(schema: &Value, instance: &Value, dialect: Dialect) -> Vec<String> {
    let validator = match dialect {
        Dialect::OpenApi => jsonschema::draft202012::new(schema),
        Dialect::AsyncApi => jsonschema::draft7::new(schema),
    }
    .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

pub(crate) fn assert_valid(schema: &Value, instance: &Value, dialect: Dialect, what: &str) {
    let errors = schema_errors(schema, instance, dialect);
    assert!(
        errors.is_empty(),
        "{what} does not match the spec:\n  instance: {instance}\n  errors: {errors:#?}"
    );
}
