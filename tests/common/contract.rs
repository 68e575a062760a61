//! The API's contract held against real answers: [`Contract`] reads the
//! committed `docs/openapi.json`, finds the operation a request matched
//! and validates each answer's status and JSON body against it, and
//! [`ask`] sends a request as raw as a client in any language does.

use super::{Master, request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The committed contract, and what was checked against it.
pub struct Contract {
    pub doc: Value,
    pub checked: BTreeSet<(String, String, u16)>,
}

/// An answer as it came.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Contract {
    pub fn load() -> Contract {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let doc = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        Contract {
            doc,
            checked: BTreeSet::new(),
        }
    }

    /// The route template of the contract that `path` matches.
    pub fn template(&self, path: &str) -> String {
        let asked: Vec<&str> = path.split('?').next().unwrap().split('/').collect();
        let paths = self.doc["paths"].as_object().unwrap();
        paths
            .keys()
            .find(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                parts.len() == asked.len()
                    && parts
                        .iter()
                        .zip(&asked)
                        .all(|(t, a)| t == a || (t.starts_with('{') && !a.is_empty()))
            })
            .unwrap_or_else(|| panic!("{path} matches no route of the contract"))
            .clone()
    }

    /// Follows a `$ref` to a component response.
    pub fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v["$ref"].as_str() {
            Some(r) => {
                let name = r.trim_start_matches("#/components/responses/");
                &self.doc["components"]["responses"][name]
            }
            None => v,
        }
    }

    /// Fails unless `answer` is one the contract documents for `method path`.
    pub fn check(&mut self, method: &str, path: &str, answer: &Answer) {
        let template = self.template(path);
        let op = &self.doc["paths"][&template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the contract");
        let documented = &op["responses"][answer.status.to_string()];
        let response = if documented.is_null() {
            let default = &op["responses"]["default"];
            assert!(
                !default.is_null(),
                "{method} {path} answered {} ({}), which the contract does not document",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            default
        } else {
            self.resolve(documented)
        };
        if let Some(schema) = response["content"]["application/json"]["schema"].as_object() {
            assert!(
                answer.content_type.starts_with("application/json"),
                "{method} {path} answered {} with {:?}, not JSON: {}",
                answer.status,
                answer.content_type,
                String::from_utf8_lossy(&answer.body)
            );
            let body: Value = serde_json::from_slice(&answer.body).unwrap();
            self.validate(schema, &body, &format!("{method} {path} {}", answer.status));
        } else if let Some(media) = response["content"]
            .as_object()
            .and_then(|c| c.keys().next())
        {
            let media = media.as_str();
            assert!(
                media == "*/*" || answer.content_type.starts_with(media),
                "{method} {path}: {:?} where the contract says {media}",
                answer.content_type
            );
        }
        self.checked
            .insert((method.into(), template, answer.status));
    }

    pub fn validate(&self, schema: &serde_json::Map<String, Value>, body: &Value, what: &str) {
        let mut root = Value::Object(schema.clone());
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:?}\nbody: {body}");
    }

    /// Fails unless every operation of the contract had an answer
    /// checked, and every `/api/v1` one an error answer too.
    pub fn covered(&self) {
        for (template, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let method = method.to_uppercase();
                let statuses: Vec<u16> = self
                    .checked
                    .iter()
                    .filter(|(m, t, _)| *m == method && t == template)
                    .map(|(_, _, s)| *s)
                    .collect();
                assert!(
                    !statuses.is_empty(),
                    "{method} {template}: no answer was checked"
                );
                if template.starts_with("/api/v1/") && template != "/api/v1/openapi.json" {
                    assert!(
                        statuses.iter().any(|s| *s >= 400),
                        "{method} {template}: no error answer was checked"
                    );
                }
            }
        }
    }
}

/// One request as raw as a client in any language sends it.
pub async fn ask(
    m: &Master,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut all = Vec::new();
    if !body.is_empty() {
        all.push(("content-type", "application/json"));
    }
    all.extend(auth.as_deref().map(|a| ("authorization", a)));
    all.extend_from_slice(headers);
    let res = request(m.endpoint.api_addr, method, path, &all, body).await;
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    // A stream (the console, an upgrade) is judged by its head alone.
    let body = if content_type.starts_with("text/event-stream") || status == 101 {
        Vec::new()
    } else {
        res.into_body().collect().await.unwrap().to_bytes().to_vec()
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// The tokens a request may carry.
pub struct Tokens {
    pub admin: String,
    pub read: String,
}

/// A master, the contract, and the tokens to ask with.
pub struct Probe<'a> {
    pub m: &'a Master,
    pub c: Contract,
    pub t: Tokens,
}

/// No body.
pub const NONE: Value = Value::Null;

impl Probe<'_> {
    /// Asks `method path` as each of `asks` says and checks every answer.
    pub async fn each(&mut self, method: &str, path: &str, asks: &[(Who, Value, u16)]) {
        for (who, body, expected) in asks {
            let token = match who {
                Who::Nobody => None,
                Who::Read => Some(self.t.read.as_str()),
                Who::Admin => Some(self.t.admin.as_str()),
            };
            let body = match body {
                Value::Null => Vec::new(),
                Value::String(raw) => raw.clone().into_bytes(),
                other => serde_json::to_vec(other).unwrap(),
            };
            let answer = ask(self.m, method, path, token, &[], body).await;
            assert_eq!(
                answer.status,
                *expected,
                "{method} {path}: {}",
                String::from_utf8_lossy(&answer.body)
            );
            self.c.check(method, path, &answer);
        }
    }

    /// `method path` with the admin token, `headers` and `body`: it must
    /// answer `expected`, as the contract says; the answer, for what
    /// follows.
    pub async fn admin(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        expected: u16,
    ) -> Answer {
        let token = self.t.admin.clone();
        let answer = ask(self.m, method, path, Some(&token), headers, body).await;
        let text = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status, expected, "{method} {path}: {text}");
        self.c.check(method, path, &answer);
        answer
    }

    /// `GET path` answers a `read` token, and refuses no token.
    pub async fn readable(&mut self, path: &str) {
        self.each(
            "GET",
            path,
            &[(Who::Read, NONE, 200), (Who::Nobody, NONE, 401)],
        )
        .await;
    }
}

#[derive(Clone, Copy)]
pub enum Who {
    Nobody,
    Read,
    Admin,
}
