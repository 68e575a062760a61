//! `{{name}}`: a proxy-wasm HTTP filter, as it would be written for Envoy,
//! which Meshplay runs on events: the event's data is the request body,
//! and headers it adds reach the handler as `event.headers`.
//!
//! It stamps every event with the header `x-{{name}}: seen`, and answers an
//! event without data (a body of JSON `null`) with a local 400 response,
//! which Meshplay turns into a rejected event.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root));
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stamp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stamp;

impl Context for Stamp {}

impl HttpContext for Stamp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.add_http_request_header("x-{{name}}", "seen");
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        if body.is_empty() || body == b"null" {
            self.send_http_response(400, vec![], Some(b"an event without data"));
            return Action::Pause;
        }
        Action::Continue
    }
}
