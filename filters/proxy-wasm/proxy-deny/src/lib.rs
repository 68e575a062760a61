//! `proxy-deny`: an HTTP filter written against the public proxy-wasm Rust
//! SDK exactly as it would be for Envoy, which Meshplay runs on events.
//!
//! Its plugin configuration is JSON, `{"words": ["spam"], "status": 403}`
//! (status defaults to 403). A request whose body contains one of the words
//! (ignoring case) is answered with a local response of that status whose
//! body says which word; Meshplay turns that into a rejected event. It counts
//! what it denies in the counter `proxy_deny_denied`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(DenyRoot { rules: Rc::new(Rules::default()) }));
}}

#[derive(Default)]
struct Rules {
    words: Vec<String>,
    status: u32,
    denied: Option<u32>,
}

struct DenyRoot {
    rules: Rc<Rules>,
}

impl Context for DenyRoot {}

impl RootContext for DenyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config: serde_json::Value = match serde_json::from_slice(&config) {
            Ok(v) => v,
            Err(e) => {
                log::error!("the configuration must be JSON: {e}");
                return false;
            }
        };
        let Some(words) = config["words"].as_array() else {
            log::error!("the configuration needs \"words\": [..]");
            return false;
        };
        self.rules = Rc::new(Rules {
            words: words
                .iter()
                .filter_map(|w| w.as_str())
                .map(str::to_lowercase)
                .collect(),
            status: config["status"].as_u64().map_or(403, |s| s as u32),
            denied: hostcalls::define_metric(MetricType::Counter, "proxy_deny_denied").ok(),
        });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Deny {
            rules: Rc::clone(&self.rules),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Deny {
    rules: Rc<Rules>,
}

impl Context for Deny {}

impl HttpContext for Deny {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let text = String::from_utf8_lossy(&body).to_lowercase();
        let Some(word) = self.rules.words.iter().find(|w| text.contains(w.as_str())) else {
            return Action::Continue;
        };
        let plugin = self
            .get_property(vec!["plugin_name"])
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_default();
        log::info!("denied for plugin {plugin}: blocked word {word:?}");
        if let Some(id) = self.rules.denied {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let reason = format!("blocked word: {word}");
        self.send_http_response(
            self.rules.status,
            vec![("x-denied-by", "proxy-deny")],
            Some(reason.as_bytes()),
        );
        Action::Pause
    }
}
