//! Every route the master's API port serves, with what it takes and what
//! it answers: the table the contract is built from. A route the router
//! has and this table lacks fails `every_route_is_in_the_contract`
//! (`routes.rs`).

use super::{Content, Op, Schemas};
use crate::mesophyll::db::{KvRecord, TenantStateEntry};
use crate::mesophyll::message::TenantState;
use crate::mesophyll::timers::Schedule;
use crate::rest::*;
use axum::http::Method;
use utoipa::openapi::schema::Type;

const KV_ENTRY: &str = "/api/v1/tenants/{type}/{id}/kv/{scope}/{key}";
const SCHEDULE: &str = "/api/v1/tenants/{type}/{id}/schedules/{name}";

/// Every operation, its schemas registered in `s`.
pub fn operations(s: &mut Schemas) -> Vec<Op> {
    let mut all = open(s);
    all.extend(live(s));
    all.extend(tenants(s));
    all.extend(catalogue(s));
    all.extend(access(s));
    all
}

/// JSON of `T`.
fn json<T: utoipa::ToSchema>(s: &mut Schemas) -> Content {
    Content::Json(Box::new(s.of::<T>()))
}

/// The routes without a token.
fn open(s: &mut Schemas) -> Vec<Op> {
    use Method as M;
    vec![
        Op::new(
            M::GET,
            "/api/system/version",
            "The master's version and protocol.",
        )
        .answer(200, "The version.", json::<Version>(s)),
        Op::new(
            M::GET,
            "/healthz",
            "Liveness: answers while the master answers at all.",
        )
        .answer(
            200,
            "`ok`, or `degraded` while a worker is away.",
            json::<Health>(s),
        ),
        Op::new(
            M::GET,
            "/readyz",
            "Readiness: every worker slot served, and leading.",
        )
        .answer(200, "Ready.", json::<Readiness>(s))
        .answer(
            503,
            "Not ready: a slot unserved, or a standby.",
            json::<Readiness>(s),
        ),
        Op::new(M::GET, "/metrics", "Prometheus metrics (OpenMetrics text).").answer(
            200,
            "The metrics.",
            Content::Raw("application/openmetrics-text"),
        ),
        Op::new(M::GET, "/api/v1/openapi.json", "This document.").answer(
            200,
            "The OpenAPI 3.1 document.",
            Content::Raw("application/json"),
        ),
        Op::new(
            M::POST,
            "/hooks/{type}/{id}/{event}",
            "A webhook: the body and headers become the event's `event.http`.",
        )
        .body(Content::Raw("*/*"))
        .answer_default(
            "What the plugin's handler answered, with its status.",
            Content::Raw("*/*"),
        )
        .errors(&[400, 404, 429, 503, 504]),
        Op::new(M::GET, "/", "The dashboard.").answer(200, "Its page.", Content::Raw("text/html")),
        Op::new(M::GET, "/dashboard/app.js", "The dashboard's script.").answer(
            200,
            "The script.",
            Content::Raw("text/javascript"),
        ),
        Op::new(M::GET, "/dashboard/app.css", "The dashboard's style.").answer(
            200,
            "The style sheet.",
            Content::Raw("text/css"),
        ),
    ]
}

/// What the master is doing now.
fn live(s: &mut Schemas) -> Vec<Op> {
    use Method as M;
    vec![
        Op::new(
            M::GET,
            "/api/v1/workers",
            "Every worker slot and what serves it.",
        )
        .answer(200, "The workers.", json::<Workers>(s)),
        Op::new(M::GET, "/api/v1/status", "The master on one screen.").answer(
            200,
            "The status.",
            json::<Status>(s),
        ),
        Op::new(M::GET, "/api/v1/traffic", "The last minute, per second.").answer(
            200,
            "The traffic.",
            json::<Traffic>(s),
        ),
        Op::new(
            M::GET,
            "/api/v1/console",
            "Server-sent events: `hello`, `dispatch` (a ConsoleEntry), `worker`, `lagged`.",
        )
        .answer(200, "The event stream.", Content::Raw("text/event-stream")),
        Op::new(
            M::GET,
            "/api/v1/tenants",
            "The tenants with a live VM, asked of each worker.",
        )
        .query(
            "limit",
            Type::Integer,
            "At most this many per worker (100; 1,000 at most).",
        )
        .answer(200, "The live tenants.", json::<LiveTenantList>(s))
        .errors(&[400]),
        Op::new(
            M::GET,
            "/api/v1/stream",
            "The binary client API: a WebSocket of MessagePack StreamRequest and \
             StreamAnswer frames.",
        )
        .answer(101, "Switching to the WebSocket.", Content::Empty)
        .errors(&[400]),
        Op::new(
            M::POST,
            "/api/v1/graphql",
            "A GraphQL query: the REST reads' twins, with the same fields.",
        )
        .body(Content::Raw("application/json"))
        .answer(
            200,
            "The GraphQL response (`data`, `errors`).",
            Content::Raw("application/graphql-response+json"),
        )
        .errors(&[400]),
        Op::new(
            M::GET,
            "/api/v1/graphql",
            "GraphQL subscriptions over a WebSocket (graphql-transport-ws): the live console.",
        )
        .answer(101, "Switching to the WebSocket.", Content::Empty)
        .errors(&[400]),
    ]
}

/// What reaches one tenant.
fn tenants(s: &mut Schemas) -> Vec<Op> {
    use Method as M;
    vec![
        Op::new(
            M::POST,
            "/api/v1/tenants/{type}/{id}/events",
            "Dispatch an event to a tenant's plugins.",
        )
        .body(json::<DispatchRequest>(s))
        .answer(200, "The plugins' results (`wait`).", json::<Dispatched>(s))
        .answer(202, "Queued (`wait: false`).", json::<Accepted>(s))
        .errors(&[400, 404, 409, 504]),
        Op::new(
            M::POST,
            "/api/v1/tenants/{type}/{id}/scripts",
            "Run a Luau script in the tenant's VM.",
        )
        .body(json::<ScriptRequest>(s))
        .answer(200, "What the script returned.", json::<ScriptResult>(s))
        .errors(&[400, 422, 504]),
        Op::new(
            M::DELETE,
            "/api/v1/tenants/{type}/{id}/vm",
            "Drop the tenant's VM.",
        )
        .answer(200, "Dropped.", json::<Dropped>(s))
        .errors(&[400, 504]),
        Op::new(
            M::GET,
            "/api/v1/tenants/{type}/{id}/state",
            "The tenant's state.",
        )
        .answer(200, "The state.", json::<TenantStateEntry>(s))
        .errors(&[400]),
        Op::new(
            M::PUT,
            "/api/v1/tenants/{type}/{id}/state",
            "Replace the tenant's state.",
        )
        .body(json::<TenantState>(s))
        .answer(200, "The state as stored.", json::<TenantStateEntry>(s))
        .errors(&[400]),
        Op::new(
            M::GET,
            "/api/v1/tenants/{type}/{id}/kv",
            "A page of the tenant's KV records.",
        )
        .query("scope", Type::String, "The scope (`default`).")
        .query("pattern", Type::String, "A LIKE pattern over keys (`%`).")
        .query("limit", Type::Integer, "At most this many records.")
        .query("after", Type::String, "The `next` of the page before.")
        .answer(200, "The page.", json::<KvPage>(s))
        .errors(&[400]),
        Op::new(M::GET, KV_ENTRY, "One KV record.")
            .answer(200, "The record.", json::<KvRecord>(s))
            .errors(&[400, 404]),
        Op::new(M::PUT, KV_ENTRY, "Set one KV record (any JSON value).")
            .body(json::<serde_json::Value>(s))
            .answer(200, "The record as stored.", json::<KvRecord>(s))
            .errors(&[400]),
        Op::new(M::DELETE, KV_ENTRY, "Delete one KV record.")
            .answer(200, "Whether there was one.", json::<Deleted>(s))
            .errors(&[400]),
        Op::new(
            M::GET,
            "/api/v1/tenants/{type}/{id}/schedules",
            "The tenant's schedules.",
        )
        .answer(200, "The schedules.", json::<ScheduleList>(s))
        .errors(&[400]),
        Op::new(
            M::PUT,
            SCHEDULE,
            "Put a schedule (replacing one of the same name).",
        )
        .body(json::<SchedulePut>(s))
        .answer(200, "The schedule, with its next run.", json::<Schedule>(s))
        .errors(&[400]),
        Op::new(M::DELETE, SCHEDULE, "Delete a schedule.")
            .answer(200, "Whether there was one.", json::<Deleted>(s))
            .errors(&[400]),
        Op::new(
            M::GET,
            "/api/v1/tenants/{type}/{id}/timers",
            "The tenant's pending timers.",
        )
        .answer(200, "The timers.", json::<TimerList>(s))
        .errors(&[400]),
    ]
}

/// Plugins, filters and their variables.
fn catalogue(s: &mut Schemas) -> Vec<Op> {
    use Method as M;
    const PLUGIN: &str = "/api/v1/plugins/{name}";
    const VAR: &str = "/api/v1/plugins/{name}/vars/{var}";
    const FILTER: &str = "/api/v1/filters/{name}";
    vec![
        Op::new(
            M::GET,
            "/api/v1/plugins",
            "The plugins in force, with their operations.",
        )
        .answer(200, "The plugins.", json::<PluginList>(s)),
        Op::new(M::PUT, PLUGIN, "Upload a plugin (or replace one uploaded).")
            .body(json::<PluginUpload>(s))
            .answer(200, "The catalogue's new revision.", json::<Changed>(s))
            .errors(&[400]),
        Op::new(M::DELETE, PLUGIN, "Remove an uploaded plugin.")
            .answer(200, "The catalogue's new revision.", json::<Changed>(s))
            .errors(&[404, 409]),
        Op::new(
            M::GET,
            "/api/v1/plugins/{name}/source",
            "A plugin's files as the master runs them.",
        )
        .answer(200, "The files.", json::<PluginUpload>(s))
        .errors(&[404]),
        Op::new(
            M::POST,
            "/api/v1/catalogue",
            "Change many plugins and filters as one.",
        )
        .body(json::<Deployment>(s))
        .answer(200, "What changed.", json::<Deployed>(s))
        .errors(&[400, 404, 409]),
        Op::new(
            M::GET,
            "/api/v1/plugins/{name}/vars",
            "A plugin's variables.",
        )
        .answer(
            200,
            "The variables (a secret's value never shown).",
            json::<VarList>(s),
        )
        .errors(&[404]),
        Op::new(M::PUT, VAR, "Set a variable, for every tenant or one.")
            .body(json::<VarChange>(s))
            .answer(200, "Set.", json::<VarChanged>(s))
            .errors(&[400, 404]),
        Op::new(M::DELETE, VAR, "Unset a variable, for every tenant or one.")
            .query(
                "tenant_type",
                Type::String,
                "With `tenant_id`: one tenant's override.",
            )
            .query("tenant_id", Type::String, "With `tenant_type`.")
            .answer(200, "Unset.", json::<VarChanged>(s))
            .errors(&[400, 404]),
        Op::new(M::GET, "/api/v1/filters", "The filters in force.").answer(
            200,
            "The filters.",
            json::<FilterList>(s),
        ),
        Op::new(M::PUT, FILTER, "Upload a filter module (its bytes).")
            .body(Content::Raw("application/wasm"))
            .answer(200, "The catalogue's new revision.", json::<Changed>(s))
            .errors(&[400, 409]),
        Op::new(M::DELETE, FILTER, "Remove an uploaded filter.")
            .answer(200, "The catalogue's new revision.", json::<Changed>(s))
            .errors(&[404, 409]),
    ]
}

/// Tokens, join tokens and the audit log.
fn access(s: &mut Schemas) -> Vec<Op> {
    use Method as M;
    vec![
        Op::new(
            M::GET,
            "/api/v1/tokens",
            "Every API token (never its secret).",
        )
        .answer(200, "The tokens.", json::<TokenList>(s)),
        Op::new(M::POST, "/api/v1/tokens", "Mint an API token with a role.")
            .body(json::<CreateToken>(s))
            .answer(
                201,
                "The token, its secret shown this once.",
                json::<CreatedToken>(s),
            )
            .errors(&[400]),
        Op::new(M::DELETE, "/api/v1/tokens/{id}", "Revoke a token.")
            .answer(200, "The token, revoked.", json::<TokenInfo>(s))
            .errors(&[404]),
        Op::new(
            M::GET,
            "/api/v1/join-tokens",
            "Every join token and the workers that joined with it.",
        )
        .answer(200, "The join tokens.", json::<JoinTokenList>(s)),
        Op::new(
            M::POST,
            "/api/v1/join-tokens",
            "Mint a join token for workers on other machines.",
        )
        .body(json::<CreateJoinToken>(s))
        .answer(
            201,
            "The token, its secret shown this once.",
            json::<CreatedToken>(s),
        )
        .errors(&[400]),
        Op::new(
            M::DELETE,
            "/api/v1/join-tokens/{id}",
            "Revoke a join token and end its workers' sessions.",
        )
        .answer(200, "The token, revoked.", json::<TokenInfo>(s))
        .errors(&[404]),
        Op::new(M::GET, "/api/v1/audit", "The audit log, a page at a time.")
            .query("after", Type::Integer, "The `next` of the page before.")
            .query("limit", Type::Integer, "At most this many entries.")
            .answer(200, "The page.", json::<AuditPage>(s))
            .errors(&[400]),
    ]
}
