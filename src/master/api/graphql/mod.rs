//! GraphQL on the API port, `/api/v1/graphql`: `POST` for queries, a
//! WebSocket on `GET` (the `graphql-transport-ws` and `graphql-ws`
//! protocols) for subscriptions.
//!
//! The schema is read from the API's contract rather than written beside
//! it: every type is an object schema of [`super::contract`] with the same
//! snake_case fields ([`types`]), and every query runs the handler of its
//! REST twin ([`root`]). So a GraphQL answer is the REST answer, field for
//! field, and one name means one thing in both. There are no mutations:
//! changes go through REST, where the audit log sees them.
//!
//! Same tokens, same roles: both routes sit behind the bearer-token check
//! and need `read`, the role of every REST route a query twins (tokens
//! and the audit log, which are `admin`'s, have no query). A subscription
//! ends when its token is revoked, as the console does.
//!
//! Bounded: a query at most [`MAX_DEPTH`] deep and [`MAX_COMPLEXITY`]
//! fields in all; a connection at most
//! [`subscription::MAX_SUBSCRIPTIONS`] subscriptions, each reading the
//! console's bounded channels.
//!
//! Why the dashboard stays on server-sent events: it needs one stream,
//! read with `fetch` and the same header as every other call, and SSE
//! gives it that with no protocol on top (`connection_init`, ids, acks)
//! and no client library in a page that has none.
//!
//! Modules:
//!
//! - [`root`]: the query fields, each a REST read's twin;
//! - [`subscription`]: `console`, the live console;
//! - [`types`]: the contract's schemas as GraphQL types.

pub mod root;
pub mod subscription;
pub mod types;

use super::ApiState;
use super::contract;
use crate::master::access::Caller;
use async_graphql::dynamic::{Schema, SchemaError, Subscription};
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Extension;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, OnceLock};

/// The deepest a query may nest.
pub const MAX_DEPTH: usize = 12;

/// The most fields a query may ask for, all levels together.
pub const MAX_COMPLEXITY: usize = 1_000;

/// The schema, built once from the contract.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| build().expect("the contract's schemas make a GraphQL schema"))
}

/// The schema in GraphQL's own language, for `meshplay graphql-schema`.
pub fn sdl() -> String {
    schema().sdl()
}

fn build() -> Result<Schema, SchemaError> {
    let document = serde_json::to_value(contract::document()).expect("the contract serializes");
    let mut schemas = document["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    schemas.extend(subscription::schemas());
    let types = types::from_contract(&schemas);
    let mut builder = Schema::build("Query", None, Some("Subscription"))
        .register(root::query(&schemas))
        .register(Subscription::new("Subscription").field(subscription::console()));
    for object in types.objects {
        builder = builder.register(object);
    }
    for kind in types.enums {
        builder = builder.register(kind);
    }
    for scalar in types.scalars {
        builder = builder.register(scalar);
    }
    builder
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// `POST /api/v1/graphql`: one query.
pub(super) async fn query(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let request = request.into_inner().data(state).data(caller);
    schema().execute(request).await.into()
}

/// `GET /api/v1/graphql`: the WebSocket that carries subscriptions.
pub(super) async fn subscribe(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mut data = async_graphql::Data::default();
    data.insert(state);
    data.insert(caller);
    data.insert(subscription::Held::default());
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema().clone(), protocol)
                .with_data(data)
                .serve()
        })
        .into_response()
}
