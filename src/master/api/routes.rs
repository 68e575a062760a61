//! The API's routes: which handler answers each (method, route) pair, the
//! bearer-token check in front of the `/api/v1` ones, and the open ones
//! (health, version, metrics, the dashboard).
//!
//! Every `/api/v1` route is added with its method alone through [`Routes`],
//! which remembers the pairs, so that a test holds them against the role
//! table ([`crate::master::access::ROUTES`]): a route without a role, or a
//! role without a route, fails it.

use super::{
    ApiError, ApiState, MAX_FILTER_BYTES, access, auth, catalogue, contract, graphql, kv, live,
    schedules, stream, system, tenants, vars,
};
use axum::Router;
use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::routing::{MethodFilter, on};
use std::sync::Arc;

/// The API's router.
///
/// The `/api/v1` routes carry their whole path and are merged, not nested:
/// a nested router matches every request twice, rebuilds its URI without
/// the prefix and stores its path parameters twice: in a profile of the
/// master under REST load, `strip_prefix` alone was 2.8% of its CPU
/// (BENCHMARKS.md, 2026-12-04, evening).
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = v1_routes(Routes::default())
        .router
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::authorize,
        ))
        .route_layer(middleware::map_response(super::error::as_error_body));
    open_routes(Routes::default())
        .router
        .merge(v1)
        .merge(crate::master::dashboard::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// The routes without a token (the dashboard's aside, which has its own
/// router).
fn open_routes(r: Routes) -> Routes {
    use Method as M;
    r.add(M::GET, "/api/system/version", system::version)
        .add(M::GET, "/healthz", system::health)
        .add(M::GET, "/readyz", system::ready)
        .add(M::GET, "/metrics", system::metrics)
        .add(M::GET, "/api/v1/openapi.json", contract::serve)
        .add(
            M::POST,
            "/hooks/{type}/{id}/{event}",
            crate::master::webhooks::hook,
        )
}

/// The `/api/v1` routes, each added with its method alone, so that
/// [`Routes`] knows every (method, route) pair the router has and a test
/// can hold them against [`crate::master::access::ROUTES`].
fn v1_routes(r: Routes) -> Routes {
    use Method as M;
    const KV_ENTRY: &str = "/api/v1/tenants/{type}/{id}/kv/{scope}/{key}";
    const SCHEDULES: &str = "/api/v1/tenants/{type}/{id}/schedules";
    const SCHEDULE: &str = "/api/v1/tenants/{type}/{id}/schedules/{name}";
    r.add(M::GET, "/api/v1/workers", system::workers)
        .add(M::GET, "/api/v1/status", system::status)
        .add(M::GET, "/api/v1/traffic", live::traffic)
        .add(M::GET, "/api/v1/console", live::console)
        .add(M::GET, "/api/v1/tenants", live::tenants)
        .add(M::GET, "/api/v1/stream", stream::upgrade)
        .add(M::POST, "/api/v1/graphql", graphql::query)
        .add(M::GET, "/api/v1/graphql", graphql::subscribe)
        .add(
            M::POST,
            "/api/v1/tenants/{type}/{id}/events",
            tenants::dispatch,
        )
        .add(
            M::POST,
            "/api/v1/tenants/{type}/{id}/scripts",
            tenants::run_script,
        )
        .add(
            M::DELETE,
            "/api/v1/tenants/{type}/{id}/vm",
            tenants::drop_vm,
        )
        .add(
            M::GET,
            "/api/v1/tenants/{type}/{id}/state",
            tenants::get_state,
        )
        .add(
            M::PUT,
            "/api/v1/tenants/{type}/{id}/state",
            tenants::put_state,
        )
        .add(M::GET, "/api/v1/tenants/{type}/{id}/kv", kv::find_kv)
        .add(M::GET, SCHEDULES, schedules::list_schedules)
        .add(M::PUT, SCHEDULE, schedules::put_schedule)
        .add(M::DELETE, SCHEDULE, schedules::delete_schedule)
        .add(
            M::GET,
            "/api/v1/tenants/{type}/{id}/timers",
            schedules::list_timers,
        )
        .add(M::GET, KV_ENTRY, kv::get_kv)
        .add(M::PUT, KV_ENTRY, kv::put_kv)
        .add(M::DELETE, KV_ENTRY, kv::delete_kv)
        .add(M::GET, "/api/v1/plugins", catalogue::list_plugins)
        .add(M::PUT, "/api/v1/plugins/{name}", catalogue::put_plugin)
        .add(
            M::DELETE,
            "/api/v1/plugins/{name}",
            catalogue::delete_plugin,
        )
        .add(
            M::GET,
            "/api/v1/plugins/{name}/source",
            catalogue::plugin_source,
        )
        .add_with(
            M::POST,
            "/api/v1/catalogue",
            on(MethodFilter::POST, catalogue::deploy).layer(axum::extract::DefaultBodyLimit::max(
                crate::rest::MAX_DEPLOY_BYTES,
            )),
        )
        .add(M::GET, "/api/v1/plugins/{name}/vars", vars::list_vars)
        .add(M::PUT, "/api/v1/plugins/{name}/vars/{var}", vars::put_var)
        .add(
            M::DELETE,
            "/api/v1/plugins/{name}/vars/{var}",
            vars::delete_var,
        )
        .add(M::GET, "/api/v1/filters", catalogue::list_filters)
        .add_with(
            M::PUT,
            "/api/v1/filters/{name}",
            on(MethodFilter::PUT, catalogue::put_filter)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_FILTER_BYTES)),
        )
        .add(
            M::DELETE,
            "/api/v1/filters/{name}",
            catalogue::delete_filter,
        )
        .add(M::GET, "/api/v1/tokens", access::list_tokens)
        .add(M::POST, "/api/v1/tokens", access::create_token)
        .add(M::DELETE, "/api/v1/tokens/{id}", access::revoke_token)
        .add(M::GET, "/api/v1/join-tokens", access::list_join_tokens)
        .add(M::POST, "/api/v1/join-tokens", access::create_join_token)
        .add(M::DELETE, "/api/v1/join-tokens/{id}", access::revoke_token)
        .add(M::GET, "/api/v1/audit", access::audit)
}

/// A router under construction that remembers every (method, route) pair
/// it was given.
#[derive(Default)]
struct Routes {
    router: Router<Arc<ApiState>>,
    added: Vec<(Method, &'static str)>,
}

impl Routes {
    /// `handler` for `method` on `route`.
    fn add<H, T>(self, method: Method, route: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, Arc<ApiState>>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method the router knows");
        self.add_with(method, route, on(filter, handler))
    }

    /// [`Routes::add`] with a method router of its own (for a layer that
    /// only this route has); it must route `method` alone.
    fn add_with(
        mut self,
        method: Method,
        route: &'static str,
        endpoint: axum::routing::MethodRouter<Arc<ApiState>>,
    ) -> Self {
        self.router = self.router.route(route, endpoint);
        self.added.push((method, route));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::access::ROUTES;

    #[test]
    fn every_route_has_a_role_and_every_role_a_route() {
        let added = v1_routes(Routes::default()).added;
        for (method, route) in &added {
            assert!(
                ROUTES.iter().any(|(m, r, _)| m == method && r == route),
                "{method} {route} is routed but has no line in access::ROUTES"
            );
        }
        for (method, route, _) in ROUTES {
            assert!(
                added.iter().any(|(m, r)| m == method && r == route),
                "access::ROUTES has {method} {route}, which the router does not route"
            );
        }
        assert_eq!(added.len(), ROUTES.len(), "a pair is listed twice");
    }

    #[test]
    fn every_route_is_in_the_contract() {
        let mut schemas = contract::Schemas::default();
        let ops = contract::operations(&mut schemas);
        let dashboard = crate::master::dashboard::ASSETS.map(|(path, _, _)| (Method::GET, path));
        let mut routed = v1_routes(Routes::default()).added;
        routed.extend(open_routes(Routes::default()).added);
        routed.extend(dashboard);
        for (method, route) in &routed {
            assert!(
                ops.iter().any(|op| op.key() == (method, *route)),
                "{method} {route} is routed but missing from the contract (contract/operations.rs)"
            );
        }
        for op in &ops {
            let (method, route) = op.key();
            assert!(
                routed.iter().any(|(m, r)| m == method && *r == route),
                "the contract has {method} {route}, which the router does not route"
            );
        }
        assert_eq!(ops.len(), routed.len(), "a pair is in the contract twice");
    }

    #[test]
    fn the_committed_contract_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == contract::to_json(),
            "docs/openapi.json is not what the code generates: run \
             `cargo run -- openapi > docs/openapi.json` and commit it"
        );
    }
}
