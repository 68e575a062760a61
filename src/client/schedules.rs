//! The typed client's calls for a tenant's schedules and pending timers
//! (`/api/v1/tenants/{type}/{id}/schedules`, `.../timers`).

use super::{ApiClient, ApiClientError};
use crate::mesophyll::timers::Schedule;
use crate::rest::{Deleted, ScheduleList, SchedulePut, TimerList};
use crate::uri::encode_component;
use hyper::Method;

fn tenant_path(kind: &str, id: &str, rest: &str) -> String {
    format!(
        "/api/v1/tenants/{}/{}/{rest}",
        encode_component(kind),
        encode_component(id)
    )
}

impl ApiClient {
    /// `GET .../schedules`.
    pub async fn schedules(&self, kind: &str, id: &str) -> Result<ScheduleList, ApiClientError> {
        let path = tenant_path(kind, id, "schedules");
        self.call(Method::GET, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `PUT .../schedules/{name}`: the schedule with its next run.
    pub async fn put_schedule(
        &self,
        kind: &str,
        id: &str,
        name: &str,
        schedule: &SchedulePut,
    ) -> Result<Schedule, ApiClientError> {
        let path = tenant_path(kind, id, &format!("schedules/{}", encode_component(name)));
        self.call(Method::PUT, &path, Some(schedule))
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE .../schedules/{name}`.
    pub async fn delete_schedule(
        &self,
        kind: &str,
        id: &str,
        name: &str,
    ) -> Result<Deleted, ApiClientError> {
        let path = tenant_path(kind, id, &format!("schedules/{}", encode_component(name)));
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET .../timers`: pending timers, the first 1,000 by id.
    pub async fn timers(&self, kind: &str, id: &str) -> Result<TimerList, ApiClientError> {
        let path = tenant_path(kind, id, "timers");
        self.call(Method::GET, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }
}
