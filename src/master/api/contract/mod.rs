//! The API's contract: an OpenAPI 3.1 document of every route the master
//! serves, built from two things that cannot drift from the code.
//!
//! - The schemas are derived from the [`crate::rest`] types (and the
//!   protocol types they carry) by `utoipa`: the same types the handlers
//!   serialize and the typed client reads.
//! - The operations come from [`operations`], a table with one line per
//!   (method, route): its body, its answers and the errors it can give.
//!   Every `/api/v1` operation also says which role it needs, read from
//!   [`crate::master::access::ROUTES`], and gets the errors every such
//!   route can give (401, 500, 503).
//!
//! The master serves the document at `GET /api/v1/openapi.json` without a
//! token (it says nothing a copy of the same release does not), and it is
//! committed as `docs/openapi.json`. Three tests hold it: one against the
//! router (a route missing from the table fails), one against the
//! committed file (`meshplay openapi > docs/openapi.json` brings it up to
//! date), and `tests/contract.rs`, which validates real answers from a
//! running master, error answers included, against it.
//!
//! Modules:
//!
//! - `operations`: the table of every route's body, answers and errors.

mod operations;

use crate::master::access;
use crate::rest::{ErrorBody, Role};
use axum::http::{Method, header};
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

pub use operations::operations;

/// The status [`Op::answer_default`] stands for: any.
const DEFAULT: u16 = 0;

/// The name of the bearer-token security scheme in the document.
const BEARER: &str = "bearer";

/// The document as JSON, pretty-printed: what `docs/openapi.json` holds.
pub fn to_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .expect("an OpenAPI document always serializes");
    json.push('\n');
    json
}

/// The whole document.
pub fn document() -> OpenApi {
    let mut schemas = Schemas::default();
    schemas.of::<ErrorBody>();
    // What the console's `dispatch` events carry (GraphQL's too).
    schemas.of::<crate::rest::ConsoleEntry>();
    let mut paths = PathsBuilder::new();
    for op in operations(&mut schemas) {
        let (method, route) = (op.method.clone(), op.route);
        paths = paths.path(route, PathItem::new(http_method(&method), op.build()));
    }
    let mut components = ComponentsBuilder::new().security_scheme(
        BEARER,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    for (name, schema) in schemas.0 {
        components = components.schema(name, schema);
    }
    for status in ERROR_STATUSES {
        let error = Content::Json(Box::new(RefOr::Ref(Ref::from_schema_name(
            ErrorBody::name(),
        ))));
        components = components.response(error_name(status), answer(error_meaning(status), error));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Meshplay")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The master's REST API: dispatch events to tenants, run scripts, read \
                     and write tenant state and KV, manage plugins, filters, variables, \
                     schedules, tokens and the audit log. Errors are `ErrorBody`: a stable \
                     `code` and a `message`.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

/// `GET /api/v1/openapi.json`: built once, served as it is.
pub(super) async fn serve() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        JSON.get_or_init(to_json).as_str(),
    )
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        _ => unreachable!("the API routes GET, POST, PUT and DELETE only"),
    }
}

/// The component schemas the operations refer to, each once.
pub struct Schemas(Vec<(String, RefOr<Schema>)>);

impl Default for Schemas {
    /// Starts with `Value` (any JSON): a type generic over its payload
    /// refers to the payload by that name without registering it.
    fn default() -> Self {
        Schemas(vec![("Value".into(), serde_json::Value::schema())])
    }
}

impl Schemas {
    /// A reference to `T`'s schema, which (with every schema it refers
    /// to) joins the components.
    pub fn of<T: ToSchema>(&mut self) -> RefOr<Schema> {
        let mut found = vec![(T::name().into_owned(), T::schema())];
        T::schemas(&mut found);
        for (name, schema) in found {
            if !self.0.iter().any(|(n, _)| *n == name) {
                self.0.push((name, schema));
            }
        }
        RefOr::Ref(Ref::from_schema_name(T::name()))
    }
}

/// What a body or an answer holds.
pub enum Content {
    /// JSON of this schema.
    Json(Box<RefOr<Schema>>),
    /// Bytes or text of this media type.
    Raw(&'static str),
    /// Nothing (an upgrade).
    Empty,
}

/// One (method, route) of the contract, built by [`Op::new`] and its
/// methods.
pub struct Op {
    method: Method,
    route: &'static str,
    summary: &'static str,
    body: Option<Content>,
    answers: Vec<(u16, &'static str, Content)>,
    query: Vec<(&'static str, Type, &'static str)>,
    errors: Vec<u16>,
}

impl Op {
    /// `method route`, described by `summary`.
    pub fn new(method: Method, route: &'static str, summary: &'static str) -> Self {
        Op {
            method,
            route,
            summary,
            body: None,
            answers: Vec::new(),
            query: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Its (method, route).
    pub fn key(&self) -> (&Method, &'static str) {
        (&self.method, self.route)
    }

    /// It takes a body.
    pub fn body(mut self, content: Content) -> Self {
        self.body = Some(content);
        self
    }

    /// It answers `status` with `content`.
    pub fn answer(mut self, status: u16, description: &'static str, content: Content) -> Self {
        self.answers.push((status, description, content));
        self
    }

    /// It answers with any status its handler chooses (a webhook), as
    /// `default`.
    pub fn answer_default(self, description: &'static str, content: Content) -> Self {
        self.answer(DEFAULT, description, content)
    }

    /// It reads the query parameter `name`.
    pub fn query(mut self, name: &'static str, kind: Type, description: &'static str) -> Self {
        self.query.push((name, kind, description));
        self
    }

    /// It may fail with these statuses (beyond those of every `/api/v1`
    /// route).
    pub fn errors(mut self, statuses: &[u16]) -> Self {
        self.errors.extend_from_slice(statuses);
        self
    }

    /// The role its route needs, when it is an `/api/v1` route.
    fn role(&self) -> Option<Role> {
        access::listed(&self.method, self.route)
    }

    /// Its error statuses: its own, and those of every route behind a
    /// token (401, 500, 503; 403 where `read` is not enough).
    fn all_errors(&self) -> Vec<u16> {
        let mut errors = self.errors.clone();
        if let Some(role) = self.role() {
            errors.extend([401, 500, 503]);
            if role > Role::Read {
                errors.push(403);
            }
        }
        if self.body.is_some() {
            errors.push(413);
        }
        errors.sort_unstable();
        errors.dedup();
        errors
    }

    fn build(self) -> Operation {
        let errors = self.all_errors();
        let role = self.role();
        let mut op = OperationBuilder::new()
            .summary(Some(self.summary))
            .tag(tag(self.route))
            .operation_id(Some(operation_id(&self.method, self.route)));
        if let Some(role) = role {
            op = op
                .description(Some(format!("Needs a token with role `{role}` or above.")))
                .security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
        }
        for name in path_parameters(self.route) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(string())),
            );
        }
        for (name, kind, description) in self.query {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(description))
                    .schema(Some(ObjectBuilder::new().schema_type(kind))),
            );
        }
        if let Some(body) = self.body {
            let (media, content) = media(body);
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(media, content)
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        for (status, description, content) in self.answers {
            let key = match status {
                DEFAULT => "default".to_owned(),
                status => status.to_string(),
            };
            op = op.response(key, answer(description, content));
        }
        for status in errors {
            op = op.response(
                status.to_string(),
                RefOr::Ref(Ref::from_response_name(error_name(status))),
            );
        }
        op.build()
    }
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String))
}

fn media(content: Content) -> (&'static str, utoipa::openapi::Content) {
    match content {
        Content::Json(schema) => (
            "application/json",
            ContentBuilder::new().schema(Some(*schema)).build(),
        ),
        Content::Raw(media) => (media, ContentBuilder::new().build()),
        Content::Empty => ("", ContentBuilder::new().build()),
    }
}

fn answer(description: &str, content: Content) -> utoipa::openapi::Response {
    let answer = ResponseBuilder::new().description(description);
    match content {
        Content::Empty => answer.build(),
        content => {
            let (media, content) = media(content);
            answer.content(media, content).build()
        }
    }
}

/// Every error status the API answers with, each a component response.
const ERROR_STATUSES: [u16; 11] = [400, 401, 403, 404, 409, 413, 422, 429, 500, 503, 504];

/// The component response of an error status.
fn error_name(status: u16) -> String {
    format!("Error{status}")
}

/// What an error status means across the API; the body's `code` says
/// which case it is.
fn error_meaning(status: u16) -> &'static str {
    match status {
        400 => "A bad body, tenant, name or parameter (`bad_request`).",
        401 => "No token, a wrong one or a revoked one (`unauthorized`).",
        403 => "The token's role does not reach this route (`forbidden`).",
        404 => "No such plugin, filter, token, key or route (`not_found`).",
        409 => "A conflict: in use, from the folder, not subscribed or not configured.",
        413 => "The body is over its limit (`too_large`).",
        422 => "The tenant code failed (`runtime`, `syntax`, `memory`, `timeout`, ...).",
        429 => "Too many requests from this address or for this tenant (`rate_limited`).",
        500 => "The store or the master failed (`internal`, `store`).",
        503 => {
            "A standby master (`not_leader`), or the tenant's worker is away or full \
                (`worker_unavailable`, `overloaded`)."
        }
        504 => {
            "The tenant code or its worker ran past the deadline (`timeout`, \
                `deadline_exceeded`)."
        }
        _ => unreachable!("an error status missing from ERROR_STATUSES"),
    }
}

/// The tag an operation is listed under: its route's resource.
fn tag(route: &str) -> &'static str {
    let route = route.trim_start_matches("/api/v1/");
    match route.split('/').next().unwrap_or_default() {
        "tenants" => "tenants",
        "plugins" | "filters" | "catalogue" => "catalogue",
        "tokens" | "join-tokens" | "audit" => "access",
        "workers" | "status" | "traffic" | "console" | "stream" => "live",
        "hooks" => "webhooks",
        _ => "system",
    }
}

/// `get_api_v1_tenants_type_id_kv`: unique, and stable while the route is.
fn operation_id(method: &Method, route: &str) -> String {
    let words: Vec<&str> = route
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let id = format!("{}_{}", method.as_str().to_lowercase(), words.join("_"));
    if words.is_empty() {
        format!("{id}root")
    } else {
        id
    }
}

/// The `{name}`s of `route`, in order.
fn path_parameters(route: &str) -> impl Iterator<Item = &str> {
    route
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique() {
        let mut schemas = Schemas::default();
        let mut ids: Vec<String> = operations(&mut schemas)
            .iter()
            .map(|op| operation_id(&op.method, op.route))
            .collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all);
    }

    #[test]
    fn path_parameters_are_read_in_order() {
        let names: Vec<&str> = path_parameters("/api/v1/tenants/{type}/{id}/kv").collect();
        assert_eq!(names, ["type", "id"]);
    }
}
