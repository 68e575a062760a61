//! The plugin author's commands: `new`, `call`, `test` and `setup editor`
//! (see [`crate::author`]).

use super::{CliError, parse_json, print_json};
use crate::author::AuthorError;
use crate::author::call::{CallPlan, call as call_plugin};
use crate::author::definitions;
use crate::author::folders;
use crate::author::host::HostPlan;
use crate::author::logbook::Logbook;
use crate::author::scaffold::{self, FilterAbi, PluginTemplate};
use crate::author::testing::{self, TestPlan, report};
use crate::mesophyll::message::Tenant;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where a local host finds filters and what it may reach.
#[derive(Debug, Clone, Args)]
pub(super) struct LocalArgs {
    /// The folder of `<name>.wasm` filters the plugins use [default:
    /// ./filters/dist when there is one].
    #[arg(long, value_name = "DIR")]
    filters: Option<PathBuf>,
    /// Open a network `http.fetch` is refused by default (loopback,
    /// private ranges), as `serve --egress-allow-cidr`.
    #[arg(long = "egress-allow-cidr", value_name = "CIDR")]
    egress_allow_cidr: Vec<ipnet::IpNet>,
}

impl LocalArgs {
    fn plan(&self) -> HostPlan {
        HostPlan {
            filters: self.filters.clone().or_else(folders::default_filters),
            open_networks: self.egress_allow_cidr.clone(),
            filter_cache: folders::filter_cache(),
            ..HostPlan::default()
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct CallArgs {
    /// The plugin folder.
    dir: PathBuf,
    /// The event.
    event: String,
    /// The event's data, JSON.
    #[arg(long, default_value = "null")]
    data: String,
    /// The tenant, `TYPE ID`.
    #[arg(long, num_args = 2, value_names = ["TYPE", "ID"], default_values = ["user", "1"])]
    tenant: Vec<String>,
    /// A sled directory to keep the store in between calls [default: a
    /// scratch one, removed after].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The call's budget.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(flatten)]
    local: LocalArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct TestArgs {
    /// Plugin folders, or folders of them [default: this folder, or
    /// ./plugins].
    dirs: Vec<PathBuf>,
    /// Only the tests whose name contains this.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// The longest one test may take.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Also write JUnit XML here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    local: LocalArgs,
    /// Print JSON instead of lines for people.
    #[arg(long)]
    json: bool,
}

impl From<AuthorError> for CliError {
    fn from(e: AuthorError) -> Self {
        match e {
            AuthorError::Usage(m) => CliError::Usage(m),
            e => CliError::Failed(e.to_string()),
        }
    }
}

/// `meshplay call`: exit 0 on a result, 3 when the handler answered an
/// error.
pub(super) async fn call(args: CallArgs, logbook: &Logbook) -> Result<ExitCode, CliError> {
    let mut host = args.local.plan();
    host.store = args.store.clone();
    let plan = CallPlan {
        folder: args.dir.clone(),
        event: args.event.clone(),
        data: parse_json("--data", &args.data)?,
        tenant: Tenant::new(&args.tenant[0], &args.tenant[1]),
        timeout: Duration::from_millis(args.timeout_ms),
        host,
    };
    let outcome = call_plugin(plan, logbook).await?;
    let code = if outcome.error.is_some() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    };
    if args.json {
        print_json(&outcome);
        return Ok(code);
    }
    for l in &outcome.logs {
        println!("[{}] {}", l.level, l.line);
    }
    if outcome.logs_dropped > 0 {
        println!("... and {} more lines", outcome.logs_dropped);
    }
    match (&outcome.value, &outcome.error) {
        (_, Some(e)) => println!("{}: error ({}): {}", outcome.plugin, e.code, e.message),
        (v, None) => println!(
            "{}: {}",
            outcome.plugin,
            serde_json::to_string(v.as_ref().unwrap_or(&serde_json::Value::Null))
                .unwrap_or_default()
        ),
    }
    println!("took {:.1} ms", outcome.took_ms);
    Ok(code)
}

/// `meshplay test`: exit 0 when every test passed, 1 otherwise.
pub(super) async fn test(args: TestArgs, logbook: &Logbook) -> Result<ExitCode, CliError> {
    let plan = TestPlan {
        plugins: folders::plugin_folders(&args.dirs)?,
        host: args.local.plan(),
        timeout: Duration::from_millis(args.timeout_ms),
        only: args.only.clone(),
    };
    let json = args.json;
    let found = testing::run(&plan, logbook, |file| {
        if !json {
            print!("{}", report::human(file));
        }
    })
    .await?;
    if json {
        print_json(&found);
    } else {
        println!("{}", found.summary());
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, found.junit())
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(if found.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum NewCommand {
    /// A plugin folder: manifest, entry file and tests, from a template.
    Plugin {
        /// Its name ([a-z0-9_-], 1-64 characters): the folder's too.
        name: String,
        /// What it starts as.
        #[arg(long, value_enum, default_value_t = PluginTemplate::Hello)]
        template: PluginTemplate,
        /// Where the folder is made.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// A filter crate for one of the two ABIs.
    Filter {
        /// Its name: the folder's, the crate's and the filter's.
        name: String,
        /// The ABI it speaks.
        #[arg(long, value_enum, default_value_t = FilterAbi::V1)]
        abi: FilterAbi,
        /// Where the folder is made.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// `meshplay new`: writes the folder and says what to do next.
pub(super) fn new(command: NewCommand) -> Result<ExitCode, CliError> {
    match command {
        NewCommand::Plugin {
            name,
            template,
            dir,
        } => {
            let folder = scaffold::new_plugin(&dir, &name, template)?;
            let shown = folder.display();
            println!("made {shown}/ (plugin.toml, init.luau, {name}.test.luau)");
            println!("next:");
            println!("  meshplay test {shown}");
            if template == PluginTemplate::Hello {
                println!("  meshplay call {shown} greet --data '{{\"name\":\"Ada\"}}'");
            }
        }
        NewCommand::Filter { name, abi, dir } => {
            let folder = scaffold::new_filter(&dir, &name, abi)?;
            let (build, module) = scaffold::filter_build(&folder)?;
            println!("made {}/", folder.display());
            println!("build it (in {}):", folder.display());
            println!("  {}", build.join(" "));
            println!("the module: {}", module.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum SetupCommand {
    /// Write meshplay.d.luau (every global a plugin sees, for luau-lsp),
    /// a .luaurc and VS Code's settings for the luau-lsp extension.
    Editor {
        /// The project's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Print the definitions to stdout instead of writing anything.
        #[arg(long)]
        print: bool,
    },
}

/// `meshplay setup editor`.
pub(super) fn setup(command: SetupCommand) -> Result<ExitCode, CliError> {
    let SetupCommand::Editor { dir, print } = command;
    if print {
        print!("{}", definitions::DEFINITIONS);
        return Ok(ExitCode::SUCCESS);
    }
    let (written, kept) = definitions::setup_editor(&dir)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    for path in kept {
        println!("kept  {} (yours already)", path.display());
    }
    println!(
        "with the luau-lsp extension (VS Code), or: luau-lsp lsp --definitions={}",
        definitions::FILE_NAME
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(super) struct DevArgs {
    /// Plugin folders and filter crates, or folders of them [default: this
    /// folder, or ./plugins].
    dirs: Vec<PathBuf>,
    /// The master's data directory, kept between runs (its store, its
    /// token, its address for the CLI).
    #[arg(long, default_value = ".meshplay-dev")]
    data_dir: PathBuf,
    /// Where the REST API listens [default: a free loopback port].
    #[arg(long, value_name = "ADDR")]
    api_addr: Option<std::net::SocketAddr>,
    /// Run a plugin's tests after each reload.
    #[arg(long)]
    test: bool,
    #[command(flatten)]
    local: LocalArgs,
}

/// `meshplay dev`: until Ctrl-C (or SIGTERM).
pub(super) async fn dev(args: DevArgs, logbook: &Logbook) -> Result<ExitCode, CliError> {
    let mut host = args.local.plan();
    host.data_dir = Some(std::path::absolute(&args.data_dir).map_err(AuthorError::from)?);
    host.api_addr = args.api_addr;
    let plan = crate::author::dev::DevPlan {
        sources: crate::author::dev::Sources::find(&args.dirs)?,
        host,
        test: args.test,
    };
    let stop = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    crate::author::dev::run(plan, logbook, stop).await?;
    Ok(ExitCode::SUCCESS)
}
