//! The outside world as a plugin's tests see it: `http.fetch` answered
//! from a table the test fills (`http.mock` in a `*.test.luau` file), and
//! refused for anything the table does not answer.
//!
//! Only `meshplay test` puts a [`StandIn`] in a worker
//! ([`crate::worker::WorkerConfig::stand_in`]); a worker without one
//! reaches the network. A fetch still passes every check before the
//! network (the fleet's policy, the manifest's `allowed_hosts`), so a test
//! catches a plugin that reaches a host its manifest does not declare;
//! only the connection is replaced.

use super::fetch::{FetchError, FetchRequest, FetchResponse};
use crate::catalogue::allowed_host::Target;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Mutex;

/// An answer a test gave for a method and a URL.
#[derive(Debug, Clone)]
pub struct Canned {
    /// The status code.
    pub status: u16,
    /// The headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// One line of the table.
#[derive(Debug, Clone)]
struct Route {
    /// Upper case, or `None` for any method.
    method: Option<String>,
    /// A canonical URL, or the start of one when `prefix`.
    url: String,
    prefix: bool,
    answer: Canned,
}

/// A fetch the stand-in saw, answered or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenFetch {
    /// The method.
    pub method: String,
    /// The canonical URL.
    pub url: String,
    /// The headers the script set, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body sent.
    pub body: Bytes,
}

/// The table, and the fetches it saw.
#[derive(Debug, Default)]
pub struct StandIn {
    routes: Mutex<Vec<Route>>,
    seen: Mutex<Vec<SeenFetch>>,
}

impl StandIn {
    /// Answers `method` (`"*"` for any) on `url` with `answer` from now on;
    /// a `url` ending in `*` covers every URL that starts with the rest.
    /// A later line wins over an earlier one that covers the same fetch.
    ///
    /// Fails when `url` (without its `*`) is not one `http.fetch` takes.
    pub fn answer(&self, method: &str, url: &str, answer: Canned) -> Result<(), String> {
        let (bare, prefix) = match url.strip_suffix('*') {
            Some(bare) => (bare, true),
            None => (url, false),
        };
        let target = Target::parse(bare).map_err(|e| format!("{url}: {e}"))?;
        let mut canonical = target.url();
        // `https://a.example/` stands for its origin as a prefix: the
        // canonical form adds the `/` the caller may have left out.
        if prefix && !bare.ends_with('/') && canonical.ends_with('/') {
            canonical.pop();
        }
        let method = (method != "*").then(|| method.to_ascii_uppercase());
        self.routes.lock().unwrap().push(Route {
            method,
            url: canonical,
            prefix,
            answer,
        });
        Ok(())
    }

    /// Forgets every answer and every fetch seen (a new test).
    pub fn clear(&self) {
        self.routes.lock().unwrap().clear();
        self.seen.lock().unwrap().clear();
    }

    /// The fetches seen since the last [`StandIn::clear`], oldest first.
    pub fn seen(&self) -> Vec<SeenFetch> {
        self.seen.lock().unwrap().clone()
    }

    /// The answer to `request`, or `egress_denied` naming what the test
    /// would have to add.
    pub fn fetch(&self, request: &FetchRequest) -> Result<FetchResponse, FetchError> {
        let url = request.target.url();
        let method = request.method.as_str().to_owned();
        self.seen.lock().unwrap().push(SeenFetch {
            method: method.clone(),
            url: url.clone(),
            headers: request
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: request.body.clone(),
        });
        let routes = self.routes.lock().unwrap();
        let route = routes.iter().rev().find(|r| {
            r.method.as_deref().is_none_or(|m| m == method)
                && if r.prefix {
                    url.starts_with(&r.url)
                } else {
                    url == r.url
                }
        });
        let Some(route) = route else {
            return Err(FetchError::Denied(format!(
                "the test gave no answer for {method} {url}: add http.mock(\"{method}\", \"{url}\", {{ ... }})"
            )));
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &route.answer.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| FetchError::BadRequest(format!("http.mock: header {name}: {e}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| FetchError::BadRequest(format!("http.mock: header {name}: {e}")))?;
            headers.append(name, value);
        }
        Ok(FetchResponse {
            status: route.answer.status,
            headers,
            body: route.answer.body.clone(),
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;
    use std::time::Duration;

    fn get(url: &str) -> FetchRequest {
        FetchRequest {
            method: Method::GET,
            target: Target::parse(url).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            follow: true,
            timeout: Duration::from_secs(1),
        }
    }

    fn canned(body: &str) -> Canned {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn answers_what_it_was_given_and_refuses_the_rest() {
        let s = StandIn::default();
        s.answer("GET", "https://api.example.com/v1/a", canned("a"))
            .unwrap();
        s.answer("*", "https://api.example.com/v2*", canned("v2"))
            .unwrap();
        let a = s.fetch(&get("https://api.example.com:443/v1/a")).unwrap();
        assert_eq!(a.body, "a");
        assert_eq!(a.headers["content-type"], "text/plain");
        assert_eq!(
            s.fetch(&get("https://api.example.com/v2/x?y=1"))
                .unwrap()
                .body,
            "v2"
        );
        let e = s.fetch(&get("https://api.example.com/v1/b")).unwrap_err();
        assert_eq!(e.code(), "egress_denied");
        assert!(
            e.to_string()
                .contains("http.mock(\"GET\", \"https://api.example.com:443/v1/b\""),
            "{e}"
        );
        assert_eq!(s.seen().len(), 3);
        s.clear();
        assert!(s.seen().is_empty());
        assert!(s.fetch(&get("https://api.example.com/v1/a")).is_err());
    }

    #[test]
    fn a_later_answer_wins_and_a_bad_url_is_refused() {
        let s = StandIn::default();
        s.answer("GET", "https://a.example/*", canned("old"))
            .unwrap();
        s.answer("GET", "https://a.example/x", canned("new"))
            .unwrap();
        assert_eq!(s.fetch(&get("https://a.example/x")).unwrap().body, "new");
        assert_eq!(s.fetch(&get("https://a.example/y")).unwrap().body, "old");
        assert!(s.answer("GET", "ftp://a.example/", canned("")).is_err());
    }
}
