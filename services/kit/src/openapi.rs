//! What every operation of the served OpenAPI document can answer because of the kit's layers
//! and extractors, added in one place ([`complete`]) so that no component repeats it and none
//! forgets it: a client generated from `GET /openapi.json` knows every status it can get.
//!
//! - a JSON body ([`crate::problem::ApiJson`]): 400 `bad-request` (not JSON), 413
//!   `payload-too-large`, 415 `unsupported-media-type`, 422 `validation-failed` (JSON of the
//!   wrong shape);
//! - path or query parameters: 400 `bad-request` (a value that does not parse);
//! - a bearer token required ([`crate::auth`]): 401 `unauthorized`;
//! - a state-changing method that requires a token ([`crate::idempotency`]): the optional
//!   `Idempotency-Key` header
//!   (1 to 255 visible ASCII characters, [`IDEMPOTENCY_KEY_PATTERN`]), 400
//!   `idempotency-key-invalid`, 422 `idempotency-key-reused`, 413 `payload-too-large`;
//! - every operation: 429 `rate-limited` ([`crate::ratelimit`], with `Retry-After`) and 503
//!   `service-unavailable` (the database unreachable: nothing was done).
//!
//! A status a component already documents keeps its description, with the kit's problem types
//! appended when it does not name them.

use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// The `Idempotency-Key` header as the middleware accepts it: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// The HTTP methods of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A schema written as JSON Schema 2020-12 (the dialect of OpenAPI 3.1), for keywords utoipa
/// has no builder for (`if`/`then`, `const`): a JSON object is served as written; any other
/// value `v` becomes `{"const": v}`.
pub fn json_schema(schema: Value) -> Object {
    let keywords = match schema {
        Value::Object(keywords) => keywords,
        other => Map::from_iter([("const".to_owned(), other)]),
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .extensions(Some(utoipa::openapi::extensions::Extensions::from_iter(
            keywords,
        )))
        .build()
}

/// The schema of a whole number from `minimum` to `maximum` (a component's limits, which
/// utoipa's attributes cannot take from a constant).
pub fn integer_schema(minimum: i64, maximum: i64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .description(Some(description))
        .build()
}

/// [`integer_schema`] that may also be `null` (an optional field).
pub fn nullable_integer_schema(minimum: i64, maximum: i64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .description(Some(description))
        .build()
}

/// The schema of a number from `minimum` to `maximum`.
pub fn number_schema(minimum: f64, maximum: f64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Number))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .description(Some(description))
        .build()
}

/// One answer the kit's layers may give: status, problem type, and when.
struct Answer {
    status: &'static str,
    problem: &'static str,
    when: &'static str,
}

const fn answer(status: &'static str, problem: &'static str, when: &'static str) -> Answer {
    Answer {
        status,
        problem,
        when,
    }
}

const BODY: [Answer; 5] = [
    answer("400", "bad-request", "the body is not JSON"),
    answer("413", "payload-too-large", "the body is too large"),
    answer(
        "415",
        "unsupported-media-type",
        "the body is not sent as `Content-Type: application/json`",
    ),
    answer(
        "422",
        "validation-failed",
        "the JSON does not have the documented shape (a field missing or of another type)",
    ),
    answer(
        "422",
        "invalid-combination",
        "fields that are valid one by one do not go together (a range that ends before it starts, ranges that overlap), a rule no schema states",
    ),
];
const PARAMETERS: [Answer; 2] = [
    answer(
        "400",
        "bad-request",
        "a path or query parameter does not parse",
    ),
    answer(
        "400",
        "invalid-combination",
        "query parameters valid one by one do not go together (a range that ends before it starts, a date that is not bookable now), a rule no schema states",
    ),
];
const TOKEN: Answer = answer(
    "401",
    "unauthorized",
    "no bearer token, or one that is invalid or expired",
);
const IDEMPOTENCY: [Answer; 3] = [
    answer(
        "400",
        "idempotency-key-invalid",
        "the `Idempotency-Key` is not 1 to 255 visible ASCII characters",
    ),
    answer(
        "413",
        "payload-too-large",
        "a body sent with an `Idempotency-Key` is larger than the key store keeps",
    ),
    answer(
        "422",
        "idempotency-key-reused",
        "the `Idempotency-Key` was used for a different request",
    ),
];
const EVERYWHERE: [Answer; 2] = [
    answer(
        "429",
        "rate-limited",
        "too many requests from this client; retry after `Retry-After` seconds",
    ),
    answer(
        "503",
        "service-unavailable",
        "a dependency (the database) is unreachable; nothing was done, retry shortly",
    ),
];

/// The operations of `doc` (an OpenAPI document as JSON) that honour `Idempotency-Key`, as
/// method and path template: the state-changing ones that require a bearer token (keys are
/// remembered per caller).
pub fn keyed_operations(doc: &Value) -> Vec<(axum::http::Method, String)> {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Vec::new();
    };
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS.into_iter().filter_map(move |method| {
                let operation = item.get(method)?.as_object()?;
                if !(is_state_changing(method) && requires_token(operation)) {
                    return None;
                }
                let method =
                    axum::http::Method::from_bytes(method.to_uppercase().as_bytes()).ok()?;
                Some((method, path.clone()))
            })
        })
        .collect()
}

/// Whether `method` (lower case, as OpenAPI names it) changes state: what
/// [`crate::idempotency`] looks at.
fn is_state_changing(method: &str) -> bool {
    matches!(method, "post" | "put" | "patch" | "delete")
}

/// The resource a plural path segment or collection names: `orders` → `order`,
/// `dead-letters` → `dead-letter`.
fn singular(plural: &str) -> Option<&str> {
    plural.strip_suffix('s').filter(|name| !name.is_empty())
}

/// Where a link takes a resource's id from, or puts it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// A path parameter.
    Parameter(String),
    /// A top-level field of the JSON request body.
    Body(String),
}

/// Adds OpenAPI `links` from the operations that yield a resource's id to those that take it,
/// so a client (or a tool) can chain create → list → read → act. Resources are named by the
/// paths and fields, never listed by hand:
/// - ids come from a `POST` on a collection (`/v1/orders` → an `order`, `$response.body#/id`),
///   a `GET` of a collection (`$response.body#/items/0/id`), an array of objects with an `id`
///   (`slots` → a `slot`, `$response.body#/slots/0/id`), a field named `…Id` (`userId` → a
///   `user`), or the path of a `PUT` on an item (`/v1/campaigns/{id}` → `$request.path.id`);
/// - they go to the path parameter after a collection (`/v1/orders/{id}/pay`), a parameter
///   named after the resource (`/v1/seckill/{campaign}/orders`), or a request body field named
///   `…Id` (`slotId` of `POST /v1/appointments`).
pub fn link_resources(doc: &mut Value) {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return;
    };
    let schemas = doc["components"]["schemas"].clone();
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(reference) => reference
                .strip_prefix("#/components/schemas/")
                .map_or(Value::Null, |name| schemas[name].clone()),
            None => schema.clone(),
        }
    };
    let has_id = |schema: &Value| resolve(schema)["properties"]["id"].is_object();
    struct Operation {
        path: String,
        method: &'static str,
        id: String,
        /// The first 2xx answer: its status and (resolved) JSON body schema.
        success: Option<(String, Value)>,
        /// (resource, where the id goes).
        takes: Vec<(String, Slot)>,
    }
    let mut operations: Vec<Operation> = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let Some(id) = operation["operationId"].as_str() else {
                continue;
            };
            let success = operation["responses"].as_object().and_then(|responses| {
                responses
                    .iter()
                    .find(|(status, _)| status.starts_with('2'))
                    .map(|(status, response)| {
                        let schema = &response["content"]["application/json"]["schema"];
                        (status.clone(), resolve(schema))
                    })
            });
            let mut takes = Vec::new();
            let segments: Vec<&str> = path.split('/').collect();
            for (at, segment) in segments.iter().enumerate() {
                let Some(param) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                else {
                    continue;
                };
                let resource = if param == "id" {
                    at.checked_sub(1)
                        .and_then(|before| singular(segments[before]))
                } else {
                    Some(param)
                };
                if let Some(resource) = resource {
                    takes.push((resource.to_owned(), Slot::Parameter(param.to_owned())));
                }
            }
            let body = resolve(&operation["requestBody"]["content"]["application/json"]["schema"]);
            for field in body["properties"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.keys())
            {
                if let Some(resource) = field.strip_suffix("Id").filter(|r| !r.is_empty()) {
                    takes.push((resource.to_owned(), Slot::Body(field.clone())));
                }
            }
            operations.push(Operation {
                path: path.clone(),
                method,
                id: id.to_owned(),
                success,
                takes,
            });
        }
    }
    let mut links: Vec<(String, &'static str, String, Map<String, Value>)> = Vec::new();
    for source in &operations {
        let Some((status, body)) = &source.success else {
            continue;
        };
        // (resource, runtime expression of its id).
        let mut yields: Vec<(String, String)> = Vec::new();
        let collection = singular(source.path.rsplit('/').next().unwrap_or_default());
        match (source.method, collection) {
            ("post", Some(resource)) if body["properties"]["id"].is_object() => {
                yields.push((resource.to_owned(), "$response.body#/id".to_owned()));
            }
            ("put", None) => {
                let segments: Vec<&str> = source.path.split('/').collect();
                if let [.., collection, last] = segments.as_slice()
                    && let Some(param) = last.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                    && let Some(resource) = singular(collection)
                {
                    yields.push((resource.to_owned(), format!("$request.path.{param}")));
                }
            }
            _ => {}
        }
        for (field, schema) in body["properties"].as_object().into_iter().flatten() {
            if schema["type"] == "array" && has_id(&schema["items"]) {
                let resource = if field == "items" {
                    collection.filter(|_| source.method == "get")
                } else {
                    singular(field)
                };
                if let Some(resource) = resource {
                    yields.push((resource.to_owned(), format!("$response.body#/{field}/0/id")));
                }
            } else if let Some(resource) = field.strip_suffix("Id").filter(|r| !r.is_empty()) {
                yields.push((resource.to_owned(), format!("$response.body#/{field}")));
            }
        }
        let mut found = Map::new();
        for target in &operations {
            if (&target.path, target.method) == (&source.path, source.method) {
                continue;
            }
            let mut parameters = Map::new();
            let mut request_body = Map::new();
            for (resource, slot) in &target.takes {
                let Some((_, expression)) = yields.iter().find(|(r, _)| r == resource) else {
                    continue;
                };
                match slot {
                    Slot::Parameter(name) => parameters.insert(name.clone(), json!(expression)),
                    Slot::Body(field) => request_body.insert(field.clone(), json!(expression)),
                };
            }
            if parameters.is_empty() && request_body.is_empty() {
                continue;
            }
            let mut link = json!({ "operationId": target.id });
            if !parameters.is_empty() {
                link["parameters"] = Value::Object(parameters);
            }
            if !request_body.is_empty() {
                link["requestBody"] = Value::Object(request_body);
            }
            found.insert(target.id.clone(), link);
        }
        if !found.is_empty() {
            links.push((source.path.clone(), source.method, status.clone(), found));
        }
    }
    for (path, method, status, found) in links {
        doc["paths"][&path][method]["responses"][&status]["links"] = Value::Object(found);
    }
}

/// Adds to every operation of `doc` (an OpenAPI 3.1 document as JSON) what the kit's layers
/// and extractors can answer (see the module documentation), and the links between operations
/// ([`link_resources`]).
pub fn complete(doc: &mut Value) {
    link_resources(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let path_has_parameters = path.contains('{');
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for method in METHODS {
            if let Some(operation) = item.get_mut(method).and_then(Value::as_object_mut) {
                complete_operation(method, path_has_parameters, operation);
            }
        }
    }
}

/// A parameter travels as text: it can be absent, never JSON `null`. An optional parameter
/// documented as `type: [integer, "null"]` (how an `Option` comes out) loses the `null`.
fn parameters_are_never_null(operation: &mut Map<String, Value>) {
    let parameters = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut);
    for parameter in parameters.into_iter().flatten() {
        if let Some(types) = parameter
            .get_mut("schema")
            .and_then(|schema| schema.get_mut("type"))
            .and_then(Value::as_array_mut)
        {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let single = types[0].clone();
                parameter["schema"]["type"] = single;
            }
        }
    }
}

fn complete_operation(method: &str, path_has_parameters: bool, operation: &mut Map<String, Value>) {
    parameters_are_never_null(operation);
    let mut answers: Vec<&Answer> = Vec::new();
    if operation.contains_key("requestBody") {
        answers.extend(&BODY);
    }
    let has_query = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    if path_has_parameters || has_query {
        answers.push(&PARAMETERS[0]);
    }
    if has_query {
        answers.push(&PARAMETERS[1]);
    }
    if requires_token(operation) {
        answers.push(&TOKEN);
    }
    if is_state_changing(method) && requires_token(operation) {
        answers.extend(&IDEMPOTENCY);
        document_idempotency_key(operation);
    }
    answers.extend(&EVERYWHERE);

    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return;
    };
    for answer in answers {
        add(responses, answer);
    }
}

/// Whether every security requirement of the operation names a scheme (an empty requirement
/// `{}` would make the token optional).
fn requires_token(operation: &Map<String, Value>) -> bool {
    operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|requirements| {
            !requirements.is_empty()
                && requirements
                    .iter()
                    .all(|r| r.as_object().is_some_and(|r| !r.is_empty()))
        })
}

/// Declares the `Idempotency-Key` header (optional unless the operation says it is required),
/// with the format the middleware checks.
fn document_idempotency_key(operation: &mut Map<String, Value>) {
    let parameters = operation
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    let Some(parameters) = parameters else {
        return;
    };
    let schema = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    });
    let declared = parameters.iter_mut().find(|p| {
        p["in"] == "header"
            && p["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key"))
    });
    match declared {
        Some(parameter) => parameter["schema"] = schema,
        None => parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "unique per operation (a UUID); a retry with the same key and request gets the first answer again instead of doing it twice",
            "schema": schema,
        })),
    }
}

/// Adds `answer` to `responses`: a new problem response, or its problem type appended to the
/// description of the one already there.
fn add(responses: &mut Map<String, Value>, answer: &Answer) {
    let line = format!("`{}`: {}", answer.problem, answer.when);
    match responses.get_mut(answer.status) {
        Some(existing) => {
            let description = existing["description"].as_str().unwrap_or_default();
            if !description.contains(&format!("`{}`", answer.problem))
                && !description
                    .split([',', ' ', ';'])
                    .any(|w| w == answer.problem)
            {
                let joined = if description.is_empty() {
                    line
                } else {
                    format!("{description}; {line}")
                };
                existing["description"] = Value::String(joined);
            }
            let content = existing
                .as_object_mut()
                .map(|r| r.entry("content").or_insert_with(|| json!({})));
            if let Some(content) = content.and_then(Value::as_object_mut) {
                content
                    .entry("application/problem+json")
                    .or_insert_with(problem_schema);
            }
        }
        None => {
            let mut response = json!({
                "description": line,
                "content": { "application/problem+json": problem_schema() },
            });
            if answer.status == "429" || answer.status == "503" {
                response["headers"] = json!({
                    "Retry-After": {
                        "description": "seconds to wait before retrying",
                        "schema": { "type": "integer", "minimum": 1 },
                    }
                });
            }
            responses.insert(answer.status.to_owned(), response);
        }
    }
}

fn problem_schema() -> Value {
    json!({ "schema": { "$ref": "#/components/schemas/Problem" } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/orders": {
                    "post": {
                        "requestBody": { "content": { "application/json": {} } },
                        "security": [{ "bearer": [] }],
                        "parameters": [{ "name": "Idempotency-Key", "in": "header", "required": true, "schema": { "type": "string" } }],
                        "responses": {
                            "201": { "description": "created" },
                            "409": { "description": "out-of-stock" },
                            "422": { "description": "validation-failed, voucher-unusable", "content": { "application/problem+json": problem_schema() } }
                        }
                    }
                },
                "/v1/campaigns/{id}": {
                    "get": {
                        "parameters": [{ "name": "Last-Event-ID", "in": "header", "schema": { "type": ["integer", "null"], "minimum": 0 } }],
                        "responses": { "200": { "description": "the campaign" } }
                    }
                },
                "/v1/campaigns": {
                    "get": { "security": [{}, { "bearer": [] }], "responses": { "200": { "description": "list" } } }
                }
            }
        })
    }

    fn statuses(doc: &Value, path: &str, method: &str) -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn a_secured_state_changing_operation_with_a_body_gets_every_kit_answer() {
        let mut doc = doc();
        complete(&mut doc);
        assert_eq!(
            statuses(&doc, "/v1/orders", "post"),
            [
                "201", "400", "401", "409", "413", "415", "422", "429", "503"
            ]
        );
        let responses = &doc["paths"]["/v1/orders"]["post"]["responses"];
        let bad = responses["400"]["description"].as_str().expect("400");
        assert!(
            bad.contains("`bad-request`") && bad.contains("`idempotency-key-invalid`"),
            "{bad}"
        );
        // A component's own 422 keeps its text; the kit's types are added once.
        let unprocessable = responses["422"]["description"].as_str().expect("422");
        assert!(
            unprocessable.starts_with("validation-failed, voucher-unusable; `invalid-combination`")
                && unprocessable.contains("`idempotency-key-reused`"),
            "{unprocessable}"
        );
        assert_eq!(unprocessable.matches("validation-failed").count(), 1);
        assert_eq!(
            responses["429"]["headers"]["Retry-After"]["schema"]["type"],
            "integer"
        );
        assert!(responses["400"]["content"]["application/problem+json"].is_object());
        // The declared key keeps `required: true` and gets the checked format.
        let key = &doc["paths"]["/v1/orders"]["post"]["parameters"][0];
        assert_eq!(key["required"], true);
        assert_eq!(key["schema"]["pattern"], IDEMPOTENCY_KEY_PATTERN);
        assert_eq!(key["schema"]["maxLength"], 255);
    }

    #[test]
    fn a_public_read_gets_only_what_applies_to_it() {
        let mut doc = doc();
        complete(&mut doc);
        assert_eq!(
            statuses(&doc, "/v1/campaigns/{id}", "get"),
            ["200", "400", "429", "503"]
        );
        // A parameter is text on the wire: never `null`.
        assert_eq!(
            doc["paths"]["/v1/campaigns/{id}"]["get"]["parameters"][0]["schema"],
            json!({ "type": "integer", "minimum": 0 })
        );
        // An optional token (`{}` among the requirements) is no 401.
        assert_eq!(
            statuses(&doc, "/v1/campaigns", "get"),
            ["200", "429", "503"]
        );
        assert!(doc["paths"]["/v1/campaigns"]["get"]["parameters"].is_null());
    }

    #[test]
    fn operations_that_yield_an_id_link_to_those_that_take_it() {
        let json_body = |schema: &str| json!({ "description": "ok", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
        let mut doc = json!({
            "paths": {
                "/v1/orders": {
                    "post": { "operationId": "place_order", "responses": { "201": json_body("Order") },
                        "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/OrderInput" } } } } },
                    "get": { "operationId": "list_orders", "responses": { "200": json_body("OrderList") } }
                },
                "/v1/orders/{id}": { "get": { "operationId": "get_order", "responses": {} } },
                "/v1/orders/{id}/pay": { "post": { "operationId": "pay", "responses": {} } },
                "/v1/products": { "post": { "operationId": "create_product", "responses": { "201": json_body("Product") } } },
                "/v1/campaigns/{id}": {
                    "put": { "operationId": "put_campaign", "responses": { "200": { "description": "ok" } } },
                    "get": { "operationId": "get_campaign", "responses": {} }
                },
                "/v1/campaigns/{id}/close": { "post": { "operationId": "close_campaign", "responses": {} } },
                "/v1/seckill/{campaign}/orders": { "post": { "operationId": "seckill", "responses": { "202": json_body("Accepted") } } },
                "/v1/auth/token": { "post": { "operationId": "sign_in", "responses": { "200": json_body("Token") } } },
                "/v1/users/{id}/roles": { "put": { "operationId": "set_roles", "responses": {} } }
            },
            "components": { "schemas": {
                "Order": { "properties": { "id": { "type": "string" } } },
                "OrderList": { "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/Order" } } } },
                "OrderInput": { "properties": { "productId": { "type": "string" }, "quantity": { "type": "integer" } } },
                "Product": { "properties": { "id": { "type": "string" } } },
                "Accepted": { "properties": { "orderId": { "type": "string" } } },
                "Token": { "properties": { "userId": { "type": "string" }, "accessToken": { "type": "string" } } }
            } }
        });
        link_resources(&mut doc);
        let links = |path: &str, method: &str, status: &str| {
            doc["paths"][path][method]["responses"][status]["links"].clone()
        };
        // Created: the new id goes to the operations under the collection.
        let created = links("/v1/orders", "post", "201");
        assert_eq!(
            created["get_order"],
            json!({ "operationId": "get_order", "parameters": { "id": "$response.body#/id" } })
        );
        assert_eq!(created["pay"]["parameters"]["id"], "$response.body#/id");
        assert!(created.get("list_orders").is_none());
        // Listed: the first item's id.
        assert_eq!(
            links("/v1/orders", "get", "200")["pay"]["parameters"]["id"],
            "$response.body#/items/0/id"
        );
        // Into a request body field named after the resource.
        assert_eq!(
            links("/v1/products", "post", "201")["place_order"],
            json!({ "operationId": "place_order", "requestBody": { "productId": "$response.body#/id" } })
        );
        // Replaced: the id of the request's path, to a parameter named after the resource too.
        let put = links("/v1/campaigns/{id}", "put", "200");
        assert_eq!(
            put["close_campaign"]["parameters"]["id"],
            "$request.path.id"
        );
        assert_eq!(put["get_campaign"]["parameters"]["id"], "$request.path.id");
        assert_eq!(put["seckill"]["parameters"]["campaign"], "$request.path.id");
        // A field named `…Id`.
        assert_eq!(
            links("/v1/seckill/{campaign}/orders", "post", "202")["get_order"]["parameters"]["id"],
            "$response.body#/orderId"
        );
        assert_eq!(
            links("/v1/auth/token", "post", "200")["set_roles"]["parameters"]["id"],
            "$response.body#/userId"
        );
        assert!(
            links("/v1/auth/token", "post", "200")
                .get("place_order")
                .is_none()
        );
    }

    /// The documented format accepts exactly the keys the middleware accepts.
    #[test]
    fn the_documented_key_format_is_the_one_the_middleware_checks() {
        let mut doc = doc();
        complete(&mut doc);
        let schema = doc["paths"]["/v1/orders"]["post"]["parameters"][0]["schema"].clone();
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        for key in [
            "a".to_owned(),
            "0f8fad5b-d9cb-469f-a165-70867728950e".to_owned(),
            "~!#$%&'*+-.^_`|".to_owned(),
            String::new(),
            "with space".to_owned(),
            "tab\there".to_owned(),
            "x".repeat(255),
            "x".repeat(256),
        ] {
            let header = axum::http::HeaderValue::from_bytes(key.as_bytes()).expect("header");
            let middleware = crate::idempotency::validate_key(&header).is_ok();
            assert_eq!(
                validator.is_valid(&Value::String(key.clone())),
                middleware,
                "{key:?}"
            );
        }
    }
}
