//! `meshplay test [DIR...]`: the `*.test.luau` files beside each plugin,
//! run against the plugin as the fleet would run it.
//!
//! A test file is Luau in a sandboxed VM of its own (the same sandbox as
//! tenants', with a 256 MiB heap and a deadline per test) holding the test
//! library ([`prelude`](./prelude.luau): `test`, `describe`, `expect`) and
//! the test's view of the world ([`world`]). The file runs once to
//! register its tests; then each test gets:
//!
//! - a fresh [`LocalHost`]: a master and a worker in this process, with
//!   the plugin (and its filters) loaded into a real tenant VM and a new
//!   scratch store, so no test sees another's keys, timers or variables;
//! - `dispatch(event, data)` through the REST API, so filters, limits and
//!   error codes are the production ones;
//! - an HTTP stand-in with no answers (`http.fetch` is `egress_denied`
//!   until `http.mock` gives one), and the clock flowing from the real
//!   time until the test freezes or advances it.
//!
//! Tests run one after another: the clock is one per process.
//!
//! Modules:
//!
//! - [`report`]: what `meshplay test` found, and the three ways it is
//!   written.

pub mod report;
pub mod world;

use crate::author::AuthorError;
use crate::author::folders;
use crate::author::host::{HostPlan, LocalHost};
use crate::author::logbook::Logbook;
use crate::catalogue::folder::TEST_SUFFIX;
use crate::worker::egress::stand_in::StandIn;
use mlua::{Lua, Table};
use report::{Failure, FileReport, Outcome, Report, TestReport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use world::{Bindings, Stage};

/// The test library, loaded before each test file.
const PRELUDE: &str = include_str!("prelude.luau");

/// The heap of a test VM.
const TEST_VM_MEMORY: usize = 256 * 1024 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct TestPlan {
    /// Plugin folders (each with its `*.test.luau` files).
    pub plugins: Vec<PathBuf>,
    /// Filters, networks and the filter cache; `plugins` and `stand_in`
    /// are set per file.
    pub host: HostPlan,
    /// The longest one test may take.
    pub timeout: Duration,
    /// Only tests whose name contains this.
    pub only: Option<String>,
}

/// When the running test (or the loading file) must end.
#[derive(Clone, Default)]
pub(crate) struct Deadline(Arc<std::sync::Mutex<Option<Instant>>>);

impl Deadline {
    fn set(&self, within: Duration) {
        *self.0.lock().unwrap() = Some(Instant::now() + within);
    }

    fn passed(&self) -> bool {
        self.0.lock().unwrap().is_some_and(|d| Instant::now() > d)
    }
}

/// The test files of `folder`, sorted.
pub fn test_files(folder: &Path) -> Result<Vec<PathBuf>, AuthorError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(TEST_SUFFIX))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs every test of `plan`; `progress` hears of each file as it ends.
///
/// Fails only when the host cannot start at all; a plugin that does not
/// build, a file that does not load and a failing test are in the report.
pub async fn run(
    plan: &TestPlan,
    logbook: &Logbook,
    mut progress: impl FnMut(&FileReport),
) -> Result<Report, AuthorError> {
    let started = Instant::now();
    // Without a cache of the author's, one for this run: each test's fresh
    // worker would otherwise compile every filter again.
    let scratch = tempfile::Builder::new()
        .prefix("meshplay-test-cache")
        .tempdir()?;
    let cache = plan
        .host
        .filter_cache
        .clone()
        .unwrap_or_else(|| scratch.path().to_owned());
    let mut report = Report::default();
    for folder in &plan.plugins {
        for file in test_files(folder)? {
            let mut host = plan.host.clone();
            host.plugins = vec![folder.clone()];
            host.filter_cache = Some(cache.clone());
            let done = run_file(plan, &host, folder, &file, logbook).await?;
            progress(&done);
            report.files.push(done);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One file: its plugin checked, its tests registered, each one run.
async fn run_file(
    plan: &TestPlan,
    host: &HostPlan,
    folder: &Path,
    file: &Path,
    logbook: &Logbook,
) -> Result<FileReport, AuthorError> {
    let mut report = FileReport::new(file);
    let plugin = match folders::check(folder) {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(format!("the plugin does not load: {e}"));
            return Ok(report);
        }
    };
    report.plugin = plugin.manifest.name.clone();
    let stand_in = Arc::new(StandIn::default());
    let bindings = Bindings {
        stage: Arc::new(Stage::default()),
        stand_in: Arc::clone(&stand_in),
        plugin: plugin.manifest.name.clone(),
        dispatch_timeout: plan.timeout,
    };
    let deadline = Deadline::default();
    deadline.set(plan.timeout);
    let (_lua, runner) = match load_file(file, &bindings, &deadline) {
        Ok(loaded) => loaded,
        Err(e) => {
            report.error = Some(e.to_string());
            return Ok(report);
        }
    };
    let mut host = host.clone();
    host.stand_in = Some(stand_in);
    let listed: Vec<(String, u32)> =
        listed(&runner).map_err(|e| AuthorError::Usage(e.to_string()))?;
    for (index, (name, line)) in listed.into_iter().enumerate() {
        if plan
            .only
            .as_ref()
            .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        deadline.set(plan.timeout);
        let test = run_test(&runner, index + 1, &host, &bindings, plan.timeout, logbook).await?;
        report.tests.push(TestReport { name, line, ..test });
    }
    Ok(report)
}

/// A VM with the library, the world and `file` loaded, and the runner the
/// prelude returned.
fn load_file(file: &Path, bindings: &Bindings, deadline: &Deadline) -> mlua::Result<(Lua, Table)> {
    let (lua, runner) = test_vm(bindings, deadline)?;
    let source = std::fs::read_to_string(file).map_err(mlua::Error::external)?;
    lua.load(source)
        .set_name(format!("@{}", file.display()))
        .exec()?;
    Ok((lua, runner))
}

/// A test VM with the library and the world, sandboxed, before any test
/// file: what [`crate::author::definitions`] checks its declarations
/// against.
pub(crate) fn test_vm(bindings: &Bindings, deadline: &Deadline) -> mlua::Result<(Lua, Table)> {
    let lua = Lua::new();
    lua.set_memory_limit(TEST_VM_MEMORY)?;
    let deadline = deadline.clone();
    // A test that loops without waiting on the host never gives the
    // runtime's timeout a turn: the VM's interrupt ends it.
    lua.set_interrupt(move |_| {
        if deadline.passed() {
            return Err(mlua::Error::runtime("the test ran past its deadline"));
        }
        Ok(mlua::VmState::Continue)
    });
    // `json` measures what it encodes with the VM's packing, as in a
    // tenant's VM.
    lua.set_app_data(crate::worker::packing::Packing::new(&lua)?);
    crate::worker::stdlib::install(&lua, &lua.globals())?;
    world::install(&lua, bindings)?;
    let host = world::host_table(&lua, bindings)?;
    let runner: Table = lua.load(PRELUDE).set_name("=prelude").call(host)?;
    lua.sandbox(true)?;
    Ok((lua, runner))
}

fn listed(runner: &Table) -> mlua::Result<Vec<(String, u32)>> {
    let tests: Table = runner.get::<mlua::Function>("tests")?.call(())?;
    tests
        .sequence_values::<Table>()
        .map(|t| {
            let t = t?;
            Ok((t.get("name")?, t.get::<Option<u32>>("line")?.unwrap_or(0)))
        })
        .collect()
}

/// One test on a fresh host.
async fn run_test(
    runner: &Table,
    index: usize,
    host: &HostPlan,
    bindings: &Bindings,
    timeout: Duration,
    logbook: &Logbook,
) -> Result<TestReport, AuthorError> {
    crate::clock::flow();
    if let Some(s) = &host.stand_in {
        s.clear();
    }
    let local = LocalHost::start(host).await?;
    bindings.stage.enter(&local);
    logbook.take();
    let started = Instant::now();
    let run: mlua::Function = runner
        .get("run")
        .map_err(|e| AuthorError::Host(e.to_string()))?;
    let result =
        tokio::time::timeout(timeout, run.call_async::<(bool, Option<String>)>(index)).await;
    let took = started.elapsed();
    let recorded = bindings.stage.leave();
    local.stop().await;
    crate::clock::flow();
    let (logs, _) = logbook.take();
    let outcome = match result {
        Err(_) => Outcome::Failed(Failure::message(format!(
            "ran past its {} ms",
            timeout.as_millis()
        ))),
        Ok(Err(e)) => Outcome::Failed(Failure::message(e.to_string())),
        Ok(Ok((true, _))) => Outcome::Passed,
        Ok(Ok((false, text))) => match recorded {
            Some(r) => Outcome::Failed(Failure::expectation(&r)),
            None => Outcome::Failed(Failure::message(text.unwrap_or_default())),
        },
    };
    Ok(TestReport {
        name: String::new(),
        line: 0,
        outcome,
        ms: took.as_secs_f64() * 1000.0,
        logs,
    })
}
