//! The plugin author's loop, as an author runs it: `meshplay new`, `test`,
//! `call` and `setup editor` from the command line, each `test` and `call`
//! starting its own master and worker in that process (real sockets, a
//! real sled store in a temporary directory).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_meshplay");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `meshplay args` in `dir`: exit code, stdout, stderr.
fn meshplay(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(EXE)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("meshplay runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn copy_plugin(name: &str, into: &Path) -> PathBuf {
    let to = into.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(repo().join("plugins").join(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    to
}

#[test]
fn from_an_empty_folder_new_test_and_call() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = meshplay(dir.path(), &["new", "plugin", "hello"]);
    assert_eq!(code, 0, "{out}{err}");
    for file in ["plugin.toml", "init.luau", "hello.test.luau"] {
        assert!(dir.path().join("hello").join(file).is_file(), "{file}");
    }
    assert!(out.contains("meshplay test hello"), "{out}");

    let (code, out, err) = meshplay(dir.path(), &["test", "hello"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
    assert!(out.contains("✓ greets by name"), "{out}");

    let (code, out, err) = meshplay(
        dir.path(),
        &["call", "hello", "greet", "--data", r#"{"name":"Ada"}"#],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#""message":"Hello, Ada!""#), "{out}");
    assert!(out.contains("[info] greeted Ada (1 so far)"), "{out}");
    assert!(out.contains("took "), "{out}");
    assert!(
        err.is_empty(),
        "a quiet call writes nothing to stderr: {err}"
    );

    // A store kept between calls with --store.
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    for expected in [1, 2] {
        let (code, out, _) = meshplay(
            dir.path(),
            &[
                "call",
                "hello",
                "greet",
                "--data",
                r#"{"name":"Ada"}"#,
                "--store",
                store,
                "--json",
            ],
        );
        assert_eq!(code, 0, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["value"]["greeted"], expected, "{v}");
        assert_eq!(v["plugin"], "hello");
        assert!(v["took_ms"].as_f64().unwrap() > 0.0);
    }

    // Every template is a folder whose tests pass as made.
    for template in ["http-api", "webhook"] {
        let name = format!("t-{template}");
        let (code, out, err) = meshplay(
            dir.path(),
            &["new", "plugin", &name, "--template", template],
        );
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = meshplay(dir.path(), &["test", &name]);
        assert_eq!(code, 0, "{template}: {out}{err}");
        assert!(out.contains(", 0 failed"), "{out}");
    }

    let (code, _, err) = meshplay(dir.path(), &["new", "plugin", "hello"]);
    assert_eq!(code, 2, "a folder that exists is refused: {err}");
    assert!(err.contains("exists already"), "{err}");
}

#[test]
fn call_reports_a_handler_error_a_broken_plugin_and_an_unknown_event() {
    let dir = tempfile::tempdir().unwrap();
    let counter = copy_plugin("counter", dir.path());

    let (code, out, _) = meshplay(
        dir.path(),
        &["call", "counter", "incr", "--data", r#"{"by":1.5}"#],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("counter: error (runtime):"), "{out}");
    assert!(out.contains("data.by must be an integer"), "{out}");

    let (code, _, err) = meshplay(dir.path(), &["call", "counter", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(r#"does not handle "nope""#), "{err}");

    std::fs::write(counter.join("init.luau"), "return { incr = function( end }").unwrap();
    let (code, _, err) = meshplay(dir.path(), &["call", "counter", "incr"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("init.luau: syntax error: 1:"),
        "the file and the line: {err}"
    );
}

#[test]
fn the_example_plugins_pass_their_tests() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = meshplay(
        &repo(),
        &[
            "test",
            "plugins",
            "--json",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let files = report["files"].as_array().unwrap();
    let tested: Vec<&str> = files
        .iter()
        .map(|f| f["plugin"].as_str().unwrap())
        .collect();
    for plugin in [
        "counter",
        "echo",
        "greeter",
        "guestbook",
        "proxied",
        "reminders",
        "signed-hook",
        "webhook-relay",
    ] {
        assert!(tested.contains(&plugin), "{plugin} has tests: {tested:?}");
    }
    let tests: Vec<&Value> = files
        .iter()
        .flat_map(|f| f["tests"].as_array().unwrap())
        .collect();
    assert!(tests.len() >= 20, "{}", tests.len());
    assert!(tests.iter().all(|t| t["outcome"] == "passed"), "{out}");
    // Mocked HTTP and advanced timers are among them.
    let names: Vec<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"posts the event, signed, and keeps the answer"),
        "{names:?}"
    );
    assert!(
        names.contains(&"fires a reminder when its time comes, not before"),
        "{names:?}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!("tests=\"{}\" failures=\"0\"", tests.len())),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), tests.len());
}

const FAILING: &str = r#"-- line 1
test("passes", function()
	expect(dispatch("incr")).toBe(1)
end)

test("expects too much", function()
	dispatch("incr")
	expect(dispatch("count")).toBe(2)
end)

test("runs away", function()
	while true do end
end)

test("still runs after a runaway", function()
	expect(dispatch("count")).toBe(0)
end)
"#;

#[test]
fn a_failing_test_says_where_what_was_expected_and_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let counter = copy_plugin("counter", dir.path());
    std::fs::remove_file(counter.join("counter.test.luau")).unwrap();
    std::fs::write(counter.join("failing.test.luau"), FAILING).unwrap();
    let junit = dir.path().join("j.xml");
    let junit = junit.to_str().unwrap();

    let (code, out, err) = meshplay(
        dir.path(),
        &["test", "counter", "--timeout-ms", "1000", "--junit", junit],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("✓ passes"), "{out}");
    assert!(out.contains("✗ expects too much"), "{out}");
    assert!(
        out.contains("counter/failing.test.luau:8: expect(...).toBe failed"),
        "{out}"
    );
    assert!(
        out.contains("expected: 2") && out.contains("actual:   1"),
        "{out}"
    );
    assert!(out.contains("✗ runs away"), "{out}");
    assert!(out.contains("ran past its deadline"), "{out}");
    assert!(out.contains("✓ still runs after a runaway"), "{out}");
    assert!(out.contains("2 passed, 2 failed"), "{out}");
    let xml = std::fs::read_to_string(junit).unwrap();
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");

    let (code, out, _) = meshplay(
        dir.path(),
        &[
            "test",
            "counter",
            "--timeout-ms",
            "1000",
            "--json",
            "--only",
            "too much",
        ],
    );
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).unwrap();
    let test = &report["files"][0]["tests"][0];
    assert_eq!(test["name"], "expects too much");
    assert_eq!(test["outcome"], "failed");
    assert_eq!(test["failure"]["line"], 8);
    assert_eq!(test["failure"]["expected"], "2");
    assert_eq!(test["failure"]["actual"], "1");

    // A plugin that does not build fails its files, and says why.
    std::fs::write(counter.join("init.luau"), "return {").unwrap();
    let (code, out, _) = meshplay(dir.path(), &["test", "counter"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("did not run: the plugin does not load"),
        "{out}"
    );
}

#[test]
fn setup_editor_writes_the_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = meshplay(dir.path(), &["setup", "editor"]);
    assert_eq!(code, 0, "{out}{err}");
    let written = std::fs::read_to_string(dir.path().join("meshplay.d.luau")).unwrap();
    assert!(written.contains("declare kv: {"));
    let (_, printed, _) = meshplay(dir.path(), &["setup", "editor", "--print"]);
    assert_eq!(printed, written);
    assert!(dir.path().join(".vscode/settings.json").is_file());
}

/// Whether rustc here can build for `target` (`rustup target add`); under
/// `CI=true` it must.
fn can_build_for(target: &str) -> bool {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let there = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .is_dir();
    if !there {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true and no {target} target: .ci/run adds it"
        );
        eprintln!("skipped: no {target} target here (rustup target add {target})");
    }
    there
}

/// `meshplay new filter` for both ABIs: each crate builds with the command
/// it prints, and a plugin runs the modules through `call --filters`.
#[test]
fn new_filters_build_and_run_before_a_handler() {
    if !can_build_for("wasm32-unknown-unknown") || !can_build_for("wasm32-wasip1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    for (name, abi, target, module) in [
        ("max-len", "v1", "wasm32-unknown-unknown", "max_len"),
        ("stamp", "proxy-wasm", "wasm32-wasip1", "stamp"),
    ] {
        let (code, out, err) = meshplay(dir.path(), &["new", "filter", name, "--abi", abi]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!("cargo build --release --target {target}")),
            "{out}"
        );
        let built = Command::new("cargo")
            .args(["build", "--release", "--target", target])
            .current_dir(dir.path().join(name))
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let wasm = dir
            .path()
            .join(name)
            .join(format!("target/{target}/release/{module}.wasm"));
        std::fs::copy(wasm, dist.join(format!("{name}.wasm"))).unwrap();
    }
    meshplay(dir.path(), &["new", "plugin", "hello"]);
    let manifest = dir.path().join("hello/plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[[filters]]\nname = \"max-len\"\nconfig = { max_len = 5 }\n\n[[filters]]\nname = \"stamp\"\n");
    std::fs::write(&manifest, text).unwrap();
    let dist = dist.to_str().unwrap();
    let (code, out, err) = meshplay(
        dir.path(),
        &[
            "call",
            "hello",
            "greet",
            "--data",
            r#"{"name":"Ada"}"#,
            "--filters",
            dist,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Hello, Ada!"), "{out}");
    let (code, out, _) = meshplay(
        dir.path(),
        &[
            "call",
            "hello",
            "greet",
            "--data",
            r#"{"name":"Adalbert"}"#,
            "--filters",
            dist,
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("error (rejected): max-len: a text of 8 characters (at most 5)"),
        "{out}"
    );
    let (code, out, _) = meshplay(dir.path(), &["call", "hello", "greet", "--filters", dist]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("stamp (400): an event without data"), "{out}");
}

/// `meshplay dev` as a child: lines of its stdout, as they come.
struct Dev {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(dir: &Path, args: &[&str]) -> Dev {
        let mut child = Command::new(EXE)
            .arg("dev")
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            // An author's own CARGO_TARGET_DIR must not send a filter
            // crate's module where dev does not look for it.
            .env("CARGO_TARGET_DIR", dir.join("elsewhere"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`; answers it.
    fn wait_for(&mut self, text: &str, within: std::time::Duration) -> String {
        let until = std::time::Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {within:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn greet(dir: &Path) -> String {
    let data = dir.join(".meshplay-dev");
    let out = Command::new(EXE)
        .args([
            "dispatch",
            "user",
            "1",
            "greet",
            "--data",
            r#"{"name":"Ada"}"#,
        ])
        .env("MESHPLAY_DATA_DIR", data)
        .env_remove("MESHPLAY_API_TOKEN")
        .env_remove("MESHPLAY_API_ADDR")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dev_keeps_the_last_good_version_and_takes_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    meshplay(dir.path(), &["new", "plugin", "hello"]);
    let init = dir.path().join("hello/init.luau");
    let good = std::fs::read_to_string(&init).unwrap();
    let mut dev = Dev::start(dir.path(), &["hello", "--test"]);
    let s = std::time::Duration::from_secs;
    dev.wait_for("watching for changes", s(30));
    assert!(greet(dir.path()).contains("Hello, Ada!"));

    std::fs::write(&init, "return { greet = function( end }").unwrap();
    let line = dev.wait_for("✗ hello", s(10));
    assert!(line.contains("init.luau: syntax error: 1:"), "{line}");
    dev.wait_for("the last good version keeps answering", s(5));
    assert!(
        greet(dir.path()).contains("Hello, Ada!"),
        "the last good version answers"
    );

    std::fs::write(&init, good.replace("Hello, ", "Howdy, ")).unwrap();
    dev.wait_for("✓ hello: plugin hello reloaded", s(10));
    assert!(greet(dir.path()).contains("Howdy, Ada!"));
    // --test: its tests ran after the reload, and the one that expects
    // "Hello" says so.
    dev.wait_for("✗ greets by name", s(30));
    dev.wait_for("2 passed, 1 failed", s(30));
    // What the handler logged, printed as it came.
    for n in 1..=3 {
        let line = format!("[info] user:1: greeted Ada ({n} so far)");
        assert!(
            dev.seen.iter().any(|l| l == &line),
            "{line}: {:?}",
            dev.seen
        );
    }
}

#[test]
fn dev_rebuilds_a_filter_crate_and_keeps_the_last_good_module() {
    if !can_build_for("wasm32-unknown-unknown") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    meshplay(dir.path(), &["new", "filter", "max-len"]);
    meshplay(dir.path(), &["new", "plugin", "hello"]);
    let manifest = dir.path().join("hello/plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap()
        + "\n[[filters]]\nname = \"max-len\"\nconfig = { max_len = 5 }\n";
    std::fs::write(&manifest, text).unwrap();
    let s = std::time::Duration::from_secs;
    let mut dev = Dev::start(dir.path(), &[]);
    dev.wait_for("✓ max-len: filter max-len rebuilt and loaded", s(180));
    dev.wait_for("✓ hello: plugin hello reloaded", s(10));
    dev.wait_for("watching for changes", s(10));
    assert!(greet(dir.path()).contains("Hello, Ada!"));

    let lib = dir.path().join("max-len/src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("fn max_len(", "fn max_len(oops")).unwrap();
    dev.wait_for("✗ max-len: the build failed", s(120));
    assert!(
        greet(dir.path()).contains("Hello, Ada!"),
        "the last good module runs"
    );

    // Now every string longer than 2 is refused: the rebuilt module runs.
    let stricter = source
        .replace("config.get(\"max_len\")", "config.get(\"no_such_key\")")
        .replace("DEFAULT_MAX_LEN: u64 = 280", "DEFAULT_MAX_LEN: u64 = 2");
    std::fs::write(&lib, stricter).unwrap();
    dev.wait_for("✓ max-len: filter max-len rebuilt and loaded", s(120));
    let answer = greet(dir.path());
    assert!(
        answer.contains("a text of 3 characters (at most 2)"),
        "{answer}"
    );
}
