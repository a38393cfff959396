//! The OpenAPI description of the collector's HTTP API, served at `GET /openapi.json`.
//!
//! The description is generated from the code: every route is registered through
//! `utoipa_actix_web`, which takes each handler's path, method, parameters and answers
//! from its `#[utoipa::path]` annotation while actix-web registers the same handler, so a
//! route cannot be served without being described. Schemas are derived from the types the
//! handlers read and answer with; the ingest bodies come from
//! [`ebb_protocol::openapi::request_schemas`], which adds what each message type needs.
//!
//! This module also answers a described path called with a method it does not take:
//! `405` with `Allow`, instead of falling through to the static files.

use actix_web::{get, web, HttpResponse};
use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;

/// The parts of the description that belong to no route: title, tags, security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ebb collector",
        description = "The ingest API (the Segment HTTP Tracking API, with Ebb's additions) \
            and the admin API of an Ebb collector. Errors answer `{\"error\": code, \
            \"message\": sentence}`; a server fault answers 5xx with an incident id, and \
            clients retry only 429 and 5xx.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(ebb_protocol::SuccessBody, ebb_protocol::Rejection, crate::error::ErrorResponse),
        responses(
            crate::admin::answers::Invalid,
            crate::admin::answers::Unauthorized,
            crate::admin::answers::Forbidden,
            crate::admin::answers::NotFound,
            crate::admin::answers::Conflict,
            crate::admin::answers::TooLarge,
        ),
    ),
    tags(
        (name = "ingest", description = "What sites and server libraries send: the \
            Segment HTTP Tracking API, authenticated by a write key."),
        (name = "admin", description = "What operators read and do, behind an admin token."),
        (name = "operations", description = "Health, readiness, metrics and this \
            description."),
        (name = "demo", description = "What the demo site served by the collector uses."),
    ),
)]
struct Base;

/// The two ways to authenticate: a write key for ingest, an admin token for the rest.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut write_key = Http::new(HttpAuthScheme::Basic);
        write_key.description = Some(
            "The write key of an environment as the user name, with an empty password. \
             It may instead travel as `writeKey` in the body."
                .into(),
        );
        components.add_security_scheme("writeKey", SecurityScheme::Http(write_key));
        let mut admin_token = Http::new(HttpAuthScheme::Bearer);
        admin_token.description = Some(
            "An admin token, for every environment or for one (see `/admin/v1/tokens`).".into(),
        );
        components.add_security_scheme("adminToken", SecurityScheme::Http(admin_token));
    }
}

/// The description before any route is added.
pub fn base() -> Document {
    Base::openapi()
}

/// The description as served: utoipa's document with the ingest request schemas filled
/// in.
pub fn to_json(document: &Document) -> Value {
    let mut value = serde_json::to_value(document).unwrap_or_else(|_| json!({}));
    let schemas = &mut value["components"]["schemas"];
    for (name, schema) in ebb_protocol::openapi::request_schemas() {
        schemas[name] = schema;
    }
    schemas["SegmentFilter"] = segment_filter_schema();
    value
}

/// A segment filter field: a reference to the `SegmentFilter` schema, or `null`.
pub fn segment_filter_field() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(utoipa::openapi::Ref::from_schema_name("SegmentFilter"))
        .item(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Null))
        .into()
}

/// A required segment filter field: a reference to the `SegmentFilter` schema.
pub fn segment_filter_reference() -> utoipa::openapi::Ref {
    utoipa::openapi::Ref::from_schema_name("SegmentFilter")
}

/// The grammar of [`crate::segment`]'s filter language as JSON Schema. Rules between
/// fields (`after` before `before`, bounds that leave a number between them, at most
/// 100 conditions and 8 levels) are only in the descriptions: JSON Schema cannot say them.
fn segment_filter_schema() -> Value {
    use crate::segment::{MAX_DAYS, MAX_NAME_CHARS, MAX_PATH_KEYS, MAX_VALUE_CHARS};

    let filter = json!({"$ref": "#/components/schemas/SegmentFilter"});
    let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS});
    let value = json!({"type": "string", "maxLength": MAX_VALUE_CHARS});
    let comparable = json!({"anyOf": [value, {"type": ["number", "boolean", "null"]}]});
    let time = json!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
    ]});
    let days = json!({"type": "integer", "minimum": 0, "maximum": MAX_DAYS});
    let keys = json!({"anyOf": [
        name,
        {"type": "array", "items": name, "minItems": 1, "maxItems": MAX_PATH_KEYS},
    ]});
    let alone = |key: &str, schema: Value, description: &str| {
        json!({
            "type": "object",
            "title": key,
            "description": description,
            "required": [key],
            "properties": {key: schema},
            "additionalProperties": false,
        })
    };
    let with_trait = |operator: &str, schema: Value, description: &str| {
        json!({
            "type": "object",
            "title": format!("trait {operator}"),
            "description": description,
            "required": ["trait", operator],
            "properties": {"trait": keys, operator: schema},
            "additionalProperties": false,
        })
    };
    let range = |low: &str, high: &str, bound: Value| {
        json!({
            "type": "object",
            "properties": {low: bound, high: bound},
            "minProperties": 1,
            "additionalProperties": false,
        })
    };
    let bounds = json!({
        "type": "object",
        "title": "trait range",
        "description": "A trait that is a JSON number within the bounds: at most one lower \
            (`gt`, `gte`) and one upper (`lt`, `lte`), leaving a number between them.",
        "required": ["trait"],
        "properties": {
            "trait": keys,
            "gt": {"type": "number"},
            "gte": {"type": "number"},
            "lt": {"type": "number"},
            "lte": {"type": "number"},
        },
        "minProperties": 2,
        "additionalProperties": false,
    });
    json!({
        "description": "Which users of the environment a segment holds; `{}` is everyone. \
            At most 8 levels deep and 100 conditions; no text may hold the NUL character. \
            See the collector's `segment` module for the language.",
        "oneOf": [
            {"type": "object", "maxProperties": 0, "title": "everyone"},
            alone("all", json!({"type": "array", "items": filter}), "Users matching every condition."),
            alone("any", json!({"type": "array", "items": filter}), "Users matching at least one condition."),
            alone("not", filter, "Users not matching the condition."),
            with_trait("equals", comparable.clone(), "A trait equal to the value, in its JSON type."),
            with_trait("notEquals", comparable, "A trait not equal to the value, or absent."),
            with_trait("exists", json!({"type": "boolean"}), "A trait set to anything but null."),
            with_trait("contains", json!({"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS}), "A text trait holding the text, ignoring case."),
            bounds,
            alone("firstSeen", range("after", "before", time.clone()), "First seen at or after `after` and before `before`; `after` must be earlier."),
            alone("lastSeen", range("after", "before", time), "Last seen at or after `after` and before `before`; `after` must be earlier."),
            alone("firstSeenDaysAgo", range("atLeast", "atMost", days.clone()), "First seen at least and at most so many days ago; `atLeast` not above `atMost`."),
            alone("lastSeenDaysAgo", range("atLeast", "atMost", days), "Last seen at least and at most so many days ago; `atLeast` not above `atMost`."),
            alone("responded", json!({"anyOf": [name, {"type": "boolean"}]}), "Responded to the survey, to any (`true`) or to none (`false`)."),
            {
                "type": "object",
                "title": "consent",
                "description": "Whose consent grants (`true`) or denies (`false`) the category.",
                "required": ["consent", "granted"],
                "properties": {"consent": name, "granted": {"type": "boolean"}},
                "additionalProperties": false,
            },
            alone("consentRecorded", json!({"type": "boolean"}), "With or without stored consent."),
            alone("gpc", json!({"type": "boolean"}), "Whose latest Global Privacy Control signal objected."),
        ],
    })
}

/// The served description, serialised once at start-up.
#[derive(Debug, Clone)]
pub struct Served(pub web::Bytes);

/// This OpenAPI description of the collector's HTTP API.
#[utoipa::path(
    tag = "operations",
    responses((
        status = 200,
        description = "An OpenAPI 3.1 document",
        content_type = "application/json",
        body = Object,
    ))
)]
#[get("/openapi.json")]
async fn openapi_json(served: web::Data<Served>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(served.0.clone())
}

/// Registers `/openapi.json`.
pub fn routes(config: &mut utoipa_actix_web::service_config::ServiceConfig) {
    config.service(openapi_json);
}

/// The methods a described path answers, as an `Allow` header lists them.
pub fn allowed_methods(item: &PathItem) -> String {
    let methods = [
        ("GET", item.get.is_some()),
        ("PUT", item.put.is_some()),
        ("POST", item.post.is_some()),
        ("DELETE", item.delete.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("HEAD", item.head.is_some()),
        ("PATCH", item.patch.is_some()),
        ("TRACE", item.trace.is_some()),
    ];
    let allowed: Vec<&str> = methods
        .into_iter()
        .filter_map(|(name, described)| described.then_some(name))
        .collect();
    allowed.join(", ")
}

/// For each described path, a resource that answers every method the path's routes do not
/// take with `405` and `Allow`. Registered after the routes, it only sees what they left.
pub fn method_fallbacks(document: &Document) -> Vec<actix_web::Resource> {
    document
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let allow = allowed_methods(item);
            web::resource(path.as_str()).to(move || {
                let allow = allow.clone();
                async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) }
            })
        })
        .collect()
}
