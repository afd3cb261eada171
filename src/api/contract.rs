//! The spec that generated clients and fuzzers read. It is poem-openapi's, refined with what
//! the server does that poem-openapi cannot say: the bearer scheme, the statuses the
//! middleware answers before any handler runs, request objects that refuse unknown fields,
//! and "one of these two is required".

use serde_json::{json, Map, Value};

/// Request bodies where at least one of two fields must be given.
const ONE_OF_REQUIRED: [(&str, [&str; 2]); 4] = [
    ("WorkSubmitRequest", ["boundary", "classification"]),
    ("CancelBatchRequest", ["filter", "workItemIds"]),
    ("DisableBatchRequest", ["filter", "targetIds"]),
    ("ShutdownBatchRequest", ["filter", "agentGuids"]),
];

/// Paths answered without a token.
const OPEN_PATHS: [&str; 2] = ["/health", "/ready"];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json; charset=utf-8": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// A created resource's id, and the operations that take it as their `{id}`.
struct Link {
    /// The `POST` that creates it, answering 201 with the resource.
    created_by: &'static str,
    taken_by: &'static [&'static str],
}

/// The links a stateful fuzzer follows: create, then read, change and remove what was
/// created.
const LINKS: [Link; 2] = [
    Link {
        created_by: "/api/targets",
        taken_by: &[
            "getTarget",
            "updateTarget",
            "removeTarget",
            "enableTarget",
            "disableTarget",
            "testTarget",
            "spinUpTarget",
        ],
    },
    Link {
        created_by: "/api/work",
        taken_by: &["getWork", "cancelWork", "retryWork"],
    },
];

pub fn refine(spec: &mut Value) {
    plain_references(spec);
    links(spec);
    unsigned_integers(spec);
    times(spec);
    bearer_tokens(spec);
    middleware_statuses(spec);
    roles(spec);
    closed_request_objects(spec);
    one_of_required(spec);
}

fn links(spec: &mut Value) {
    for link in LINKS {
        let response = &mut spec["paths"][link.created_by]["post"]["responses"]["201"];
        if !response.is_object() {
            continue;
        }
        let links: Map<String, Value> = link
            .taken_by
            .iter()
            .map(|operation| {
                (
                    (*operation).to_string(),
                    json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}}),
                )
            })
            .collect();
        response["links"] = Value::Object(links);
    }
}

/// An unsigned integer (poem-openapi writes only its format) cannot be negative, nor
/// larger than its width.
fn unsigned_integers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let largest = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some(json!(u8::MAX)),
                Some("uint16") => Some(json!(u16::MAX)),
                Some("uint32") => Some(json!(u32::MAX)),
                Some("uint64") => Some(json!(u64::MAX)),
                _ => None,
            };
            if let Some(largest) = largest {
                map.entry("minimum").or_insert(json!(0));
                map.entry("maximum").or_insert(largest);
            }
            map.values_mut().for_each(unsigned_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_integers),
        _ => {}
    }
}

/// `asOf` is an RFC 3339 time (poem-openapi sees a string).
fn times(spec: &mut Value) {
    // What poem-openapi cannot say of a list's items or of a time in a body.
    let token = &mut spec["components"]["schemas"]["TokenRequest"]["properties"];
    if token.is_object() {
        token["projects"]["items"]["pattern"] = json!("^[A-Za-z0-9-][A-Za-z0-9_-]{0,127}$");
        token["expiresAt"]["format"] = json!("date-time");
    }
    for (_, operation) in operations(spec) {
        let parameters = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for parameter in parameters.filter(|p| p["name"] == "asOf" && p["in"] == "query") {
            if let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut) {
                schema.insert("format".into(), json!("date-time"));
            }
        }
    }
}

fn operations(spec: &mut Value) -> impl Iterator<Item = (String, &mut Map<String, Value>)> {
    spec["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.iter_mut())
        .flat_map(|(path, item)| {
            item.as_object_mut()
                .into_iter()
                .flat_map(|methods| methods.values_mut())
                .filter_map(|op| op.as_object_mut())
                .map(move |op| (path.clone(), op))
        })
}

/// poem-openapi writes a documented field that refers to another schema as `allOf: [ref,
/// {description}]`, and generators then emit a second copy of the referred model. A field
/// is the referred schema itself; its words stay in the code.
fn plain_references(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let single_ref = map
                .get("allOf")
                .and_then(Value::as_array)
                .and_then(|parts| {
                    let refs: Vec<&Value> =
                        parts.iter().filter(|p| p.get("$ref").is_some()).collect();
                    let rest_is_words = parts.iter().all(|p| {
                        p.get("$ref").is_some()
                            || p.as_object()
                                .is_some_and(|o| o.keys().all(|k| k == "description"))
                    });
                    (refs.len() == 1 && rest_is_words).then(|| refs[0].clone())
                });
            if let Some(reference) = single_ref {
                *value = reference;
                return;
            }
            map.values_mut().for_each(plain_references);
        }
        Value::Array(items) => items.iter_mut().for_each(plain_references),
        _ => {}
    }
}

fn bearer_tokens(spec: &mut Value) {
    spec["components"]["securitySchemes"]["bearer"] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "A token of API_TOKENS (admin of every project) or one created with POST /api/tokens (a role and a project scope). Required on every /api route and /metrics when API_TOKENS is set. Each operation's `x-weft-role` is the least role it needs; a project outside the token's scope answers 404, as if it did not exist."
    });
    spec["security"] = json!([{"bearer": []}]);
    for (path, op) in operations(spec) {
        if OPEN_PATHS.contains(&path.as_str()) {
            op.insert("security".into(), json!([]));
        }
    }
}

/// Answered by the middleware, whatever the handler: 401 without a valid token, 413 for a
/// body over the limit, 415 for a body that is not JSON.
fn middleware_statuses(spec: &mut Value) {
    for (path, op) in operations(spec) {
        let has_body = op.contains_key("requestBody");
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        if !OPEN_PATHS.contains(&path.as_str()) {
            responses.entry("401").or_insert_with(|| {
                error_response("A bearer token is required and was missing or wrong.")
            });
        }
        if has_body {
            responses
                .entry("413")
                .or_insert_with(|| error_response("The body is larger than WEFT_MAX_BODY_BYTES."));
            responses
                .entry("415")
                .or_insert_with(|| error_response("The body is not `application/json`."));
        }
    }
}

/// The least role each operation needs (`x-weft-role`, and in its description), the 403
/// for tokens of a lesser role, and the 429 of the per-token rate limit.
fn roles(spec: &mut Value) {
    let Some(paths) = spec["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if OPEN_PATHS.contains(&path.as_str()) {
            continue;
        }
        let Some(methods) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in methods.iter_mut() {
            let (Ok(parsed), Some(op)) = (
                method.to_uppercase().parse::<poem::http::Method>(),
                op.as_object_mut(),
            ) else {
                continue;
            };
            let role = crate::access::required_role(&parsed, path);
            op.insert("x-weft-role".into(), json!(role.as_str()));
            let words = format!("Needs the `{}` role.", role.as_str());
            let description = match op.get("description").and_then(Value::as_str) {
                Some(d) => format!("{d}\n\n{words}"),
                None => words,
            };
            op.insert("description".into(), json!(description));
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            if role != events::access::Role::Viewer {
                responses.entry("403").or_insert_with(|| {
                    error_response("The token's role may not do this (see `x-weft-role`).")
                });
            }
            responses.entry("429").or_insert_with(|| {
                error_response(
                    "The token is over its request rate; `Retry-After` says when to retry.",
                )
            });
        }
    }
}

/// Every object schema a request body reaches refuses fields it does not declare (the
/// server parses bodies strictly); objects without declared properties stay open.
fn closed_request_objects(spec: &mut Value) {
    let mut pending: Vec<String> = Vec::new();
    for (_, op) in operations(spec) {
        if let Some(body) = op.get("requestBody") {
            collect_refs(body, &mut pending);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(schema) = spec["components"]["schemas"].get_mut(&name) else {
            continue;
        };
        collect_refs(schema, &mut pending);
        close(schema);
    }
}

/// Also: an optional field may be sent as `null`, which the server reads as absent.
fn close(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.contains_key("properties") && !object.contains_key("additionalProperties") {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
    let required: Vec<String> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (name, property) in object
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|p| p.iter_mut())
    {
        if required.contains(name) {
            continue;
        }
        if property.get("$ref").is_some() {
            // A reference's siblings are ignored, so nullable wraps it.
            *property = json!({"allOf": [property.take()], "nullable": true});
        } else if let Some(p) = property.as_object_mut() {
            p.insert("nullable".into(), Value::Bool(true));
        }
    }
    for nested in object
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        close(nested);
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    out.push(name.to_string());
                }
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// "At least one of `a` and `b`", said so that generators still emit a typed model: the
/// schema becomes `anyOf` two complete variants, one requiring `a`, the other `b`.
fn one_of_required(spec: &mut Value) {
    let schemas = &mut spec["components"]["schemas"];
    for (name, fields) in ONE_OF_REQUIRED {
        let Some(base) = schemas.get(name).cloned().filter(Value::is_object) else {
            continue;
        };
        let mut variants = Vec::new();
        for field in fields {
            let mut variant = base.clone();
            let mut required = variant["required"].as_array().cloned().unwrap_or_default();
            required.push(Value::from(field));
            variant["required"] = Value::Array(required);
            // Required here, so not null: the server reads null as absent.
            let property = &mut variant["properties"][field];
            if let Some(inner) = property["allOf"][0].get("$ref").cloned() {
                *property = json!({"$ref": inner});
            } else if let Some(p) = property.as_object_mut() {
                p.remove("nullable");
            }
            let variant_name = format!(
                "{name}With{}{}",
                field[..1].to_ascii_uppercase(),
                &field[1..]
            );
            variant["title"] = Value::from(variant_name.as_str());
            schemas[&variant_name] = variant;
            variants.push(json!({"$ref": format!("#/components/schemas/{variant_name}")}));
        }
        schemas[name] = json!({
            "description": base["description"].clone(),
            "anyOf": variants,
        });
    }
}

/// Routes served beside the spec's operations, each GET only.
const OTHER_GET_ROUTES: [&str; 6] = [
    "/",
    "/dashboard",
    "/metrics",
    "/api/ws",
    "/api/openapi.json",
    "/api/docs",
];

/// The methods `path` answers to, upper-case, for the `Allow` header of a 405.
pub fn allowed_methods(path: &str) -> Vec<String> {
    let matches = |template: &str| {
        let (t, p): (Vec<&str>, Vec<&str>) =
            (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len()
            && t.iter()
                .zip(&p)
                .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
    };
    if OTHER_GET_ROUTES.contains(&path) {
        return vec!["GET".into()];
    }
    let mut methods: Vec<String> = super::spec()["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.iter())
        // A literal path wins over a template of the same shape (`/api/work/cancel-batch`
        // over `/api/work/{id}`), as in the router.
        .filter(|(template, _)| template.as_str() == path)
        .chain(
            super::spec()["paths"]
                .as_object()
                .into_iter()
                .flat_map(|paths| paths.iter())
                .filter(|(template, _)| matches(template)),
        )
        .take(1)
        .flat_map(|(_, item)| item.as_object().into_iter().flat_map(|m| m.keys()))
        .map(|m| m.to_ascii_uppercase())
        .collect();
    methods.sort();
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_schema_exists_so_no_refinement_is_silently_lost() {
        let mut spec: Value = serde_json::from_str(&super::super::service().spec()).unwrap();
        for (name, fields) in ONE_OF_REQUIRED {
            let properties = &spec["components"]["schemas"][name]["properties"];
            for field in fields {
                assert!(properties.get(field).is_some(), "{name}.{field}");
            }
        }
        refine(&mut spec);
        assert_eq!(
            spec["components"]["schemas"]["WorkSubmitRequestWithBoundary"]["additionalProperties"],
            false
        );
        assert_eq!(spec["paths"]["/health"]["get"]["security"], json!([]));
        assert!(spec["paths"]["/api/work"]["post"]["responses"]["415"].is_object());
        assert!(spec["paths"]["/api/state"]["get"]["responses"]["401"].is_object());
        let operations: Vec<String> = operations(&mut spec)
            .filter_map(|(_, op)| op.get("operationId")?.as_str().map(String::from))
            .collect();
        for link in LINKS {
            let response = &spec["paths"][link.created_by]["post"]["responses"]["201"];
            assert!(response["links"].is_object(), "{}", link.created_by);
            for operation in link.taken_by {
                assert!(operations.iter().any(|o| o == operation), "{operation}");
            }
        }
        let submit = &spec["components"]["schemas"]["WorkSubmitRequestWithBoundary"]["properties"];
        assert_eq!(submit["priority"]["nullable"], true);
        assert!(submit["description"].get("nullable").is_none(), "required");
    }

    #[test]
    fn allowed_methods_follow_the_routes() {
        assert_eq!(
            allowed_methods("/api/targets/box"),
            ["DELETE", "GET", "PUT"]
        );
        assert_eq!(allowed_methods("/api/work/cancel-batch"), ["POST"]);
        assert_eq!(allowed_methods("/api/work"), ["GET", "POST"]);
        assert_eq!(allowed_methods("/metrics"), ["GET"]);
    }
}
