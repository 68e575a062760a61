//! `proxy-stamp`: an HTTP filter written against the public proxy-wasm Rust
//! SDK exactly as it would be for Envoy, which Meshplay runs on events.
//!
//! Its plugin configuration (a string; `"stamped"` when there is none) is
//! read once in `on_configure`. Every request gets the header
//! `x-stamp: <configuration>`; a body that is a JSON object gets two fields
//! more, `stamp` (the configuration) and `path` (the request's `:path`,
//! which Meshplay sets to `/<event name>`). Any other body passes as it is.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(StampRoot { stamp: Rc::from("stamped") }));
}}

struct StampRoot {
    stamp: Rc<str>,
}

impl Context for StampRoot {}

impl RootContext for StampRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            return true;
        };
        match String::from_utf8(bytes) {
            Ok(stamp) if !stamp.is_empty() => {
                self.stamp = Rc::from(stamp);
                true
            }
            _ => {
                log::error!("the configuration must be a non-empty UTF-8 string");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stamp {
            stamp: Rc::clone(&self.stamp),
            path: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stamp {
    stamp: Rc<str>,
    path: String,
}

impl Context for Stamp {}

impl HttpContext for Stamp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        self.set_http_request_header("x-stamp", Some(&self.stamp));
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            // Wait for the whole body (Envoy buffers it meanwhile).
            return Action::Pause;
        }
        let Some(body) = self.get_http_request_body(0, body_size) else {
            return Action::Continue;
        };
        let Ok(serde_json::Value::Object(mut data)) = serde_json::from_slice(&body) else {
            return Action::Continue;
        };
        data.insert("stamp".into(), self.stamp.as_ref().into());
        data.insert("path".into(), self.path.as_str().into());
        match serde_json::to_vec(&data) {
            Ok(out) => self.set_http_request_body(0, body_size, &out),
            Err(e) => log::warn!("cannot encode the stamped body: {e}"),
        }
        Action::Continue
    }
}
