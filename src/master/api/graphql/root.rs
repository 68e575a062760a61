//! GraphQL's root fields. Each query is the twin of a REST read and runs
//! the same handler, so that both answer the same; the subscription
//! carries what the console's server-sent events carry.
//!
//! ```graphql
//! workers: Workers!            # GET /api/v1/workers
//! status: Status!              # GET /api/v1/status
//! traffic: Traffic!            # GET /api/v1/traffic
//! plugins: PluginList!         # GET /api/v1/plugins
//! filters: FilterList!         # GET /api/v1/filters
//! live_tenants(limit): LiveTenantList!                 # GET /api/v1/tenants
//! tenant_state(type, id): TenantStateEntry!            # GET .../state
//! kv(type, id, scope, pattern, limit, after): KvPage!  # GET .../kv
//! kv_entry(type, id, scope, key): KvRecord             # GET .../kv/{scope}/{key} (null: none)
//! schedules(type, id): ScheduleList!                   # GET .../schedules
//! timers(type, id): TimerList!                         # GET .../timers
//!
//! subscription { console: ConsoleEvent! }              # GET /api/v1/console
//! ```

use super::super::{ApiError, ApiState, catalogue, kv, live, schedules, system, tenants};
use super::types::{Shape, named};
use async_graphql::ErrorExtensions;
use async_graphql::dynamic::{
    Field, FieldFuture, InputValue, Object, ResolverContext, TypeRef, ValueAccessor,
};
use axum::extract::{Path, Query, State};
use serde::Serialize;
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;

/// The `Query` type: a field per REST read.
pub fn query(schemas: &Map<String, Value>) -> Object {
    let root = Root { schemas };
    Object::new("Query")
        .field(root.plain("workers", "Workers", |s| async move {
            Ok(system::workers(State(s)).await.0)
        }))
        .field(root.plain("status", "Status", |s| async move {
            Ok(system::status(State(s)).await?.0)
        }))
        .field(root.plain("traffic", "Traffic", |s| async move {
            Ok(live::traffic(State(s)).await.0)
        }))
        .field(root.plain("plugins", "PluginList", |s| async move {
            Ok(catalogue::list_plugins(State(s)).await?.0)
        }))
        .field(root.plain("filters", "FilterList", |s| async move {
            Ok(catalogue::list_filters(State(s)).await?.0)
        }))
        .field(
            root.field(
                "live_tenants",
                "LiveTenantList",
                false,
                |s, args| async move {
                    let limit = args.int("limit")?.map(|n| n as u32);
                    Ok(live::tenants(State(s), Query(live::ListQuery { limit }))
                        .await?
                        .0)
                },
            )
            .argument(InputValue::new("limit", TypeRef::named(TypeRef::INT))),
        )
        .field(tenant_field(
            &root,
            "tenant_state",
            "TenantStateEntry",
            |s, t, _| async move { Ok(tenants::get_state(State(s), Path(t)).await?.0) },
        ))
        .field(kv_page(&root))
        .field(kv_entry(&root))
        .field(tenant_field(
            &root,
            "schedules",
            "ScheduleList",
            |s, t, _| async move { Ok(schedules::list_schedules(State(s), Path(t)).await?.0) },
        ))
        .field(tenant_field(
            &root,
            "timers",
            "TimerList",
            |s, t, _| async move { Ok(schedules::list_timers(State(s), Path(t)).await?.0) },
        ))
}

/// `kv(type, id, scope, pattern, limit, after)`.
fn kv_page(root: &Root<'_>) -> Field {
    let field = tenant_field(root, "kv", "KvPage", |s, (kind, id), args| async move {
        let query = kv::FindQuery {
            scope: args.string("scope"),
            pattern: args.string("pattern"),
            limit: args.int("limit")?.map(|n| n as u32),
            after: args.string("after"),
        };
        Ok(kv::find_kv(State(s), Path((kind, id)), Query(query))
            .await?
            .0)
    });
    ["scope", "pattern", "after"]
        .into_iter()
        .fold(field, |f, name| {
            f.argument(InputValue::new(name, TypeRef::named(TypeRef::STRING)))
        })
        .argument(InputValue::new("limit", TypeRef::named(TypeRef::INT)))
}

/// `kv_entry(type, id, scope, key)`: null where REST answers 404.
fn kv_entry(root: &Root<'_>) -> Field {
    root.field("kv_entry", "KvRecord", true, |s, args| async move {
        let (kind, id) = (args.required("type")?, args.required("id")?);
        let (scope, key) = (args.required("scope")?, args.required("key")?);
        match kv::get_kv(State(s), Path((kind, id, scope, key))).await {
            Ok(record) => Ok(Some(record.0)),
            Err(e) if e.code() == "not_found" => Ok(None),
            Err(e) => Err(e),
        }
    })
    .argument(InputValue::new("type", TypeRef::named_nn(TypeRef::STRING)))
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::STRING)))
    .argument(InputValue::new("scope", TypeRef::named_nn(TypeRef::STRING)))
    .argument(InputValue::new("key", TypeRef::named_nn(TypeRef::STRING)))
}

/// A field of one tenant (`type` and `id` arguments).
fn tenant_field<F, Fut, T>(root: &Root<'_>, name: &str, ty: &str, run: F) -> Field
where
    F: Fn(Arc<ApiState>, (String, String), Args) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
    T: Serialize,
{
    root.field(name, ty, false, move |s, args| {
        let run = run.clone();
        async move {
            let tenant = (args.required("type")?, args.required("id")?);
            run(s, tenant, args).await
        }
    })
    .argument(InputValue::new("type", TypeRef::named_nn(TypeRef::STRING)))
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::STRING)))
}

/// What a root field's resolver is built with.
struct Root<'a> {
    schemas: &'a Map<String, Value>,
}

impl Root<'_> {
    /// A field without arguments.
    fn plain<F, Fut, T>(&self, name: &str, ty: &str, run: F) -> Field
    where
        F: Fn(Arc<ApiState>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
        T: Serialize,
    {
        self.field(name, ty, false, move |s, _| run(s))
    }

    /// A field answering what `run` answers, serialized as REST does.
    fn field<F, Fut, T>(&self, name: &str, ty: &str, nullable: bool, run: F) -> Field
    where
        F: Fn(Arc<ApiState>, Args) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
        T: Serialize,
    {
        let shape = named(ty, self.schemas);
        let resolver = shape.clone();
        Field::new(
            name,
            shape.type_ref(nullable),
            move |ctx: ResolverContext<'_>| {
                let (run, shape) = (run.clone(), resolver.clone());
                FieldFuture::new(async move {
                    let state = Arc::clone(ctx.data::<Arc<ApiState>>()?);
                    let args = Args::read(&ctx)?;
                    let answer = run(state, args).await.map_err(graphql_error)?;
                    let json = serde_json::to_value(answer)?;
                    Ok(Shape::resolve(&shape, json))
                })
            },
        )
    }
}

/// A resolver's arguments, read before it awaits anything.
pub struct Args(Map<String, Value>);

impl Args {
    fn read(ctx: &ResolverContext<'_>) -> async_graphql::Result<Args> {
        let mut args = Map::new();
        for (name, value) in ctx.args.iter() {
            args.insert(name.to_string(), accessed(value)?);
        }
        Ok(Args(args))
    }

    fn string(&self, name: &str) -> Option<String> {
        self.0.get(name).and_then(Value::as_str).map(str::to_owned)
    }

    fn required(&self, name: &str) -> Result<String, ApiError> {
        self.string(name)
            .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be at least 0"))),
        }
    }
}

fn accessed(value: ValueAccessor<'_>) -> async_graphql::Result<Value> {
    Ok(value.as_value().clone().into_json()?)
}

/// An API error as GraphQL reports it: its message, with the REST code
/// and status as extensions.
pub fn graphql_error(e: ApiError) -> async_graphql::Error {
    let (code, status) = (e.code().to_owned(), e.status().as_u16());
    async_graphql::Error::new(e.message()).extend_with(|_, ext| {
        ext.set("code", code);
        ext.set("status", status);
    })
}
