//! `http.fetch` against real HTTP servers on loopback, through a real
//! master and its workers: what a manifest allows, what the egress guard
//! refuses whatever the manifest says, and every limit with its code.

mod common;

use common::api::upload;
use common::upstream::Upstream;
use common::{Master, Opts, event};
use meshplay::client::{ApiClient, DispatchOutcome};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Handlers that fetch what their event says and answer what came back:
/// the response, or the error's code and message.
const FETCHER: &str = r#"
local function try(url, options)
    local ok, res = pcall(http.fetch, url, options)
    if ok then
        return { status = res.status, ok = res.ok, body = res.body, headers = res.headers, url = res.url }
    end
    if type(res) ~= "table" then return { code = "not a table", message = tostring(res) } end
    return { code = res.code, message = res.message, text = tostring(res) }
end
return {
    fetch = function(event) return try(event.data.url, event.data.options) end,
    many = function(event)
        local n = 0
        for _ = 1, event.data.n do
            local ok, res = pcall(http.fetch, event.data.url)
            if not ok then return { done = n, code = res.code, message = res.message } end
            n += 1
        end
        return { done = n }
    end,
    uncaught = function(event) return http.fetch(event.data.url).status end,
}
"#;

async fn install(c: &ApiClient, name: &str, hosts: &[String]) {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    let manifest = format!(
        "name = {name:?}\nversion = '1'\nevents = ['fetch', 'many', 'uncaught']\nallowed_hosts = [{}]\n",
        hosts.join(", ")
    );
    c.put_plugin(name, &upload(&manifest, FETCHER))
        .await
        .unwrap();
}

/// Plugin `plugin`'s answer to `name` with `data` (its value, or its
/// error as `{ error = ... }`).
async fn call(c: &ApiClient, plugin: &str, name: &str, data: Value) -> Value {
    // Generous: five masters of this file start side by side, each
    // compiling the example filters.
    let mut req = event(name, data);
    req.timeout_ms = Some(20_000);
    match c.dispatch("user", "fetcher", &req).await.unwrap() {
        DispatchOutcome::Done(d) => {
            let r = d
                .results
                .into_iter()
                .find(|r| r.plugin == plugin)
                .unwrap_or_else(|| panic!("no result of {plugin}"));
            match r.error {
                Some(e) => json!({ "error": e.code, "message": e.message }),
                None => r.value.unwrap(),
            }
        }
        other => panic!("{other:?}"),
    }
}

async fn fetch(c: &ApiClient, plugin: &str, url: &str, options: Value) -> Value {
    call(
        c,
        plugin,
        "fetch",
        json!({ "url": url, "options": options }),
    )
    .await
}

fn code(v: &Value) -> &str {
    v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {v}"))
}

async fn with_loopback_open(extra: &[&str]) -> Master {
    let mut args = vec![
        "--egress-allow-cidr".to_string(),
        "127.0.0.1/32".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Master::start(Opts {
        extra: args,
        ..Opts::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reaches_what_its_manifest_allows_and_nothing_else() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let m = with_loopback_open(&[]).await;
    let c = &m.client;
    install(c, "fetcher", &[up.origin()]).await;

    let res = fetch(
        c,
        "fetcher",
        &format!("{}/echo?x=1", up.origin()),
        json!({ "method": "post", "headers": { "x-api-key": "k-123" }, "body": { "n": 1 } }),
    )
    .await;
    assert_eq!(res["status"], 200, "{res}");
    assert_eq!(res["ok"], true);
    let echoed: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["headers"]["x-api-key"], "k-123");
    assert_eq!(echoed["headers"]["content-type"], "application/json");
    assert_eq!(echoed["body"], r#"{"n":1}"#);
    assert_eq!(res["headers"]["content-type"], "application/json");

    // Another port of the same address is another origin.
    let denied = fetch(c, "fetcher", &format!("{}/echo", other.origin()), json!({})).await;
    assert_eq!(code(&denied), "egress_denied", "{denied}");
    let line = format!("allowed_hosts = [\"{}\"]", other.origin());
    assert!(
        denied["message"].as_str().unwrap().contains(&line),
        "{denied}"
    );
    assert_eq!(other.hits(), 0);

    // A redirect leads only where the manifest allows.
    let to_other = format!("{}/redirect?to={}/echo", up.origin(), other.origin());
    let denied = fetch(c, "fetcher", &to_other, json!({})).await;
    assert_eq!(code(&denied), "egress_denied", "{denied}");
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .contains("a redirect from"),
        "{denied}"
    );
    assert_eq!(other.hits(), 0);

    // Uncaught, the code still names what happened.
    let uncaught = call(c, "fetcher", "uncaught", json!({ "url": other.origin() })).await;
    assert_eq!(uncaught["error"], "runtime", "{uncaught}");
    assert!(
        uncaught["message"]
            .as_str()
            .unwrap()
            .contains("egress_denied: plugin fetcher may not reach"),
        "{uncaught}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_followed_hop_by_hop_and_credentials_stay_with_their_origin() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let m = with_loopback_open(&[]).await;
    let c = &m.client;
    install(
        c,
        "fetcher",
        &[up.origin(), other.origin(), "http://169.254.169.254".into()],
    )
    .await;
    let creds =
        json!({ "headers": { "authorization": "Bearer s3cret", "cookie": "a=b", "x-keep": "1" } });

    let same = format!("{}/redirect?to=/echo", up.origin());
    let res = fetch(c, "fetcher", &same, creds.clone()).await;
    let echoed: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed["headers"]["authorization"], "Bearer s3cret",
        "{echoed}"
    );
    assert_eq!(res["url"], format!("http://{}/echo", up.addr));

    let across = format!("{}/redirect?to={}/echo", up.origin(), other.origin());
    let res = fetch(c, "fetcher", &across, creds.clone()).await;
    let echoed: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");
    assert!(echoed["headers"].get("cookie").is_none(), "{echoed}");
    assert_eq!(echoed["headers"]["x-keep"], "1");

    // Allowed by the manifest, refused by the guard: the metadata address.
    let metadata = format!(
        "{}/redirect?to=http://169.254.169.254/latest/meta-data/",
        up.origin()
    );
    let denied = fetch(c, "fetcher", &metadata, json!({})).await;
    assert_eq!(code(&denied), "egress_denied", "{denied}");
    assert!(
        denied["message"].as_str().unwrap().contains("link-local"),
        "{denied}"
    );

    // Manual: the 3xx itself.
    let res = fetch(c, "fetcher", &across, json!({ "redirect": "manual" })).await;
    assert_eq!(res["status"], 302, "{res}");
    assert_eq!(
        res["headers"]["location"],
        format!("{}/echo", other.origin())
    );

    // A loop ends after five hops.
    let looping = format!("{}/redirect", up.origin());
    let res = fetch(c, "fetcher", &looping, json!({})).await;
    assert_eq!(code(&res), "network", "{res}");
    assert!(
        res["message"]
            .as_str()
            .unwrap()
            .contains("more than 5 redirects"),
        "{res}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_has_its_code() {
    let up = Upstream::start().await;
    let m = with_loopback_open(&["--egress-max-response-bytes", "1048576"]).await;
    let c = &m.client;
    install(c, "fetcher", &[up.origin()]).await;

    let res = fetch(c, "fetcher", &format!("{}/endless", up.origin()), json!({})).await;
    assert_eq!(code(&res), "too_large", "{res}");
    assert!(
        res["message"].as_str().unwrap().contains("1048576"),
        "{res}"
    );

    let started = Instant::now();
    let res = fetch(
        c,
        "fetcher",
        &format!("{}/slow", up.origin()),
        json!({ "timeout_ms": 200 }),
    )
    .await;
    assert_eq!(code(&res), "timeout", "{res}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // A slow upstream cannot keep a handler past its deadline.
    let mut req = event(
        "uncaught",
        json!({ "url": format!("{}/slow?ms=10000", up.origin()) }),
    );
    req.timeout_ms = Some(700);
    let started = Instant::now();
    let outcome = c.dispatch("user", "fetcher", &req).await.unwrap();
    let DispatchOutcome::Done(d) = outcome else {
        panic!("{outcome:?}")
    };
    let r = d.results.iter().find(|r| r.plugin == "fetcher").unwrap();
    assert_eq!(
        r.error.as_ref().map(|e| e.code.as_str()),
        Some("timeout"),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let echo = format!("{}/echo", up.origin());
    let res = call(c, "fetcher", "many", json!({ "url": echo, "n": 60 })).await;
    assert_eq!(res["done"], 50, "{res}");
    assert_eq!(code(&res), "too_many_fetches", "{res}");
    // The count is per call: the next call starts again.
    let res = call(c, "fetcher", "many", json!({ "url": echo, "n": 3 })).await;
    assert_eq!(res["done"], 3, "{res}");

    for (url, options, what) in [
        ("file:///etc/passwd", json!({}), "only http and https"),
        ("http://user:pw@127.0.0.1/", json!({}), "credentials"),
        (
            echo.as_str(),
            json!({ "headers": { "host": "internal" } }),
            "set by the host",
        ),
        (
            echo.as_str(),
            json!({ "method": "CONNECT" }),
            "not a method",
        ),
        (echo.as_str(), json!({ "bogus": 1 }), "unknown option"),
    ] {
        let res = fetch(c, "fetcher", url, options).await;
        assert_eq!(code(&res), "bad_request", "{res}");
        assert!(
            res["message"].as_str().unwrap().contains(what),
            "{what}: {res}"
        );
    }

    // The master's own ports stay closed although loopback is open.
    install(c, "prober", &[format!("http://{}", m.endpoint.api_addr)]).await;
    let res = fetch(
        c,
        "prober",
        &format!("http://{}/healthz", m.endpoint.api_addr),
        json!({}),
    )
    .await;
    assert_eq!(code(&res), "egress_denied", "{res}");
    assert!(
        res["message"]
            .as_str()
            .unwrap()
            .contains("master's own port"),
        "{res}"
    );

    // A script has no manifest, so no egress.
    let err = common::api::script(c, "fetcher", &format!("return http.fetch('{echo}').status"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("egress_denied"), "{err}");

    // Counted by plugin and outcome, never by tenant (workers report
    // their counts in heartbeats); denials logged with their request id.
    let outcomes = [
        "response",
        "too_large",
        "timeout",
        "too_many_fetches",
        "bad_request",
        "egress_denied",
    ];
    let text = common::eventually(
        Duration::from_secs(10),
        "every outcome in /metrics",
        || async {
            let (text, _) = common::scrape(&m).await;
            outcomes
                .iter()
                .all(|outcome| {
                    let series = format!("outcome=\"{outcome}\"");
                    text.lines().any(|l| {
                        l.starts_with("meshplay_egress_fetches_total{") && l.contains(&series)
                    })
                })
                .then_some(text)
        },
    )
    .await;
    assert!(!text.contains("fetcher\",tenant"), "a tenant label");
    let log = m.log();
    assert!(
        log.lines()
            .any(|l| l.contains("egress denied") && l.contains("req_id")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_refuses_every_spelling_of_an_inside_address() {
    let up = Upstream::start().await;
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    let port = up.addr.port();
    let hosts = [
        format!("http://localhost:{port}"),
        "http://169.254.169.254".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://[::1]:{port}"),
    ];
    install(c, "fetcher", &hosts).await;
    for (url, what) in [
        (format!("http://localhost:{port}/echo"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/echo"),
            "IPv4-mapped",
        ),
        (format!("http://2130706433:{port}/echo"), "loopback"),
        (format!("http://0x7f.1:{port}/echo"), "loopback"),
        (format!("http://[::1]:{port}/echo"), "loopback"),
    ] {
        let res = fetch(c, "fetcher", &url, json!({})).await;
        assert_eq!(code(&res), "egress_denied", "{url}: {res}");
        assert!(
            res["message"].as_str().unwrap().contains(what),
            "{url}: {res}"
        );
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_turn_egress_off_for_the_fleet() {
    let up = Upstream::start().await;
    let m = with_loopback_open(&["--no-egress"]).await;
    let c = &m.client;
    install(c, "fetcher", &[up.origin()]).await;
    let res = fetch(c, "fetcher", &format!("{}/echo", up.origin()), json!({})).await;
    assert_eq!(code(&res), "egress_denied", "{res}");
    assert!(
        res["message"].as_str().unwrap().contains("--no-egress"),
        "{res}"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_relay_example_posts_with_its_secret_and_keeps_the_answer() {
    // The tour's upstream, the binary's own echo server, on a free port
    // instead of the example's 8099.
    let addr = common::free_addr();
    let _echo = common::Guard(
        std::process::Command::new(common::EXE)
            .args(["echo-server", "--addr", &addr])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let m = with_loopback_open(&[]).await;
    let c = &m.client;
    let dir = common::plugins_dir().join("webhook-relay");
    let manifest = std::fs::read_to_string(dir.join("plugin.toml"))
        .unwrap()
        .replace("127.0.0.1:8099", &addr);
    let code = std::fs::read_to_string(dir.join("init.luau")).unwrap();
    c.put_plugin("webhook-relay", &upload(&manifest, &code))
        .await
        .unwrap();

    let res = call(
        c,
        "webhook-relay",
        "relay",
        json!({ "text": "deploy finished" }),
    )
    .await;
    assert_eq!(res["error"], "not_configured", "{res}");
    let key = "sk-demo-4b1d";
    let (status, _, err) = {
        let mut child = std::process::Command::new(common::EXE)
            .args(["vars", "set", "webhook-relay", "api_key", "-"])
            .env("MESHPLAY_DATA_DIR", m.data_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(key.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(status, Some(0), "{err}");

    let res = common::eventually(Duration::from_secs(10), "the echo server", || async {
        let res = call(
            c,
            "webhook-relay",
            "relay",
            json!({ "text": "deploy finished" }),
        )
        .await;
        (res["status"] == 200).then_some(res)
    })
    .await;
    assert_eq!(res["status"], 200, "{res}");
    let last = call(c, "webhook-relay", "last_delivery", json!({})).await;
    let answer = &last["last"]["answer"];
    assert_eq!(answer["method"], "POST", "{last}");
    assert_eq!(answer["body"]["data"]["text"], "deploy finished", "{last}");
    let names = answer["header_names"].as_array().unwrap();
    assert!(
        names.iter().any(|n| n == "x-api-key") && names.iter().any(|n| n == "x-signature"),
        "{last}"
    );
    assert!(!last.to_string().contains(key), "{last}");
    assert!(!m.log().contains(key));
}
