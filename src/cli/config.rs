//! `meshplay serve --config meshplay.toml` and `meshplay config check FILE`.
//!
//! Every `serve` flag is a TOML key of the same name:
//!
//! ```toml
//! workers = 4
//! api-addr = "127.0.0.1:9081"
//! heartbeat-timeout-ms = 5000
//! log-format = "json"
//! ```
//!
//! Precedence is flag > environment > file > default. The file is not a
//! second parser with its own rules: each setting is checked by its flag's
//! own value parser and, when neither the command line nor the flag's
//! environment variable sets it, handed to clap as that flag. So a file
//! accepts exactly what the command line does, and its errors name the
//! line: an unknown key, a value of the wrong kind, a value the flag
//! refuses, a TOML syntax error.

use super::{Cli, CliError};
use clap::{ArgAction, Command, CommandFactory};
use std::ffi::OsString;
use std::path::Path;

/// One `key = value` of a configuration file, as the flag it stands for.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Setting {
    /// The flag's long name.
    pub key: String,
    /// Its value as the command line would carry it (`None`: a switch).
    pub value: Option<String>,
    /// The line it stands on.
    pub line: usize,
}

/// `serve` as clap sees it, global flags included.
fn serve_command() -> Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand("serve")
        .expect("serve is a subcommand")
        .clone()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads and checks `path`: the settings, or every problem found, each as
/// `FILE:LINE: what`.
pub(super) fn read(path: &Path) -> Result<Vec<Setting>, Vec<String>> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: {e}")])?;
    let syntax = |e: toml::de::Error| {
        let line = e.span().map_or(1, |s| line_of(&text, s.start));
        let what = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        vec![format!("{name}:{line}: {what}")]
    };
    let spans = toml::de::DeTable::parse(&text).map_err(syntax)?;
    let table: toml::Table = text.parse().map_err(syntax)?;
    let serve = serve_command();
    let mut settings = Vec::new();
    let mut problems = Vec::new();
    // In the file's order, so that problems read top to bottom.
    let mut keys: Vec<_> = spans
        .get_ref()
        .keys()
        .map(|k| (k.get_ref(), k.span()))
        .collect();
    keys.sort_by_key(|(_, span)| span.start);
    for (key, span) in keys {
        let line = line_of(&text, span.start);
        let mut problem = |what: String| problems.push(format!("{name}:{line}: {what}"));
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_ref()) && !a.is_hide_set());
        let Some(arg) = arg.filter(|_| key != "config") else {
            problem(format!(
                "unknown key `{key}` (`meshplay serve --help` lists the flags)"
            ));
            continue;
        };
        let value = &table[key.as_ref()];
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let text_value = match value {
            toml::Value::Boolean(on) if switch => {
                if *on {
                    settings.push(Setting {
                        key: key.to_string(),
                        value: None,
                        line,
                    });
                }
                continue;
            }
            _ if switch => {
                problem(format!("`{key}` is a switch: true or false"));
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                problem(format!("`{key}` takes a string, a number or a boolean"));
                continue;
            }
        };
        // The flag alone through clap: its own parser, range and choices.
        let flag = format!("--{key}={text_value}");
        if let Err(e) = serve.clone().try_get_matches_from(["serve", flag.as_str()]) {
            let why = e.to_string();
            let why = why.lines().next().unwrap_or_default();
            problem(format!(
                "`{key}`: {}",
                why.trim_start_matches("error: ").trim_end_matches('.')
            ));
            continue;
        }
        settings.push(Setting {
            key: key.to_string(),
            value: Some(text_value),
            line,
        });
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// The command line with the settings of `serve --config FILE` added as
/// flags, where neither the command line nor the flag's environment
/// variable already sets them; the command line as it was without
/// `--config`.
///
/// Fails with every problem of the file, as [`read`] finds them.
pub(super) fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, CliError> {
    let Some(serve) = argv.iter().position(|a| a == "serve") else {
        return Ok(argv);
    };
    let after = &argv[serve + 1..];
    let path = after.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        if a == "--config" {
            after.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(OsString::from)
        }
    });
    let Some(path) = path else {
        return Ok(argv);
    };
    let settings = read(Path::new(&path)).map_err(|p| CliError::Usage(p.join("\n")))?;
    let given = |key: &str| {
        let flag = format!("--{key}");
        argv.iter().filter_map(|a| a.to_str()).any(|a| {
            a == flag
                || a.strip_prefix(flag.as_str())
                    .is_some_and(|rest| rest.starts_with('='))
        })
    };
    let serve_cmd = serve_command();
    let from_env = |key: &str| {
        serve_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key))
            .and_then(|a| a.get_env())
            .is_some_and(|var| std::env::var_os(var).is_some())
    };
    let mut out = argv.clone();
    for s in settings {
        if given(&s.key) || from_env(&s.key) {
            continue;
        }
        out.push(match s.value {
            Some(v) => format!("--{}={v}", s.key).into(),
            None => format!("--{}", s.key).into(),
        });
    }
    Ok(out)
}

/// `meshplay config check FILE`: prints the settings or the problems.
pub(super) fn check(path: &Path) -> Result<std::process::ExitCode, CliError> {
    match read(path) {
        Ok(settings) => {
            for s in &settings {
                match &s.value {
                    Some(v) => println!("{}:{}: --{}={v}", path.display(), s.line, s.key),
                    None => println!("{}:{}: --{}", path.display(), s.line, s.key),
                }
            }
            println!("{}: {} settings, all valid", path.display(), settings.len());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(problems) => Err(CliError::Usage(problems.join("\n"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let f = file(
            "workers = 3\n\nworkerz = 2\napi-addr = \"not an address\"\nheartbeat-timeout-ms = 0\nplugins = [1]\n",
        );
        let problems = read(f.path()).unwrap_err();
        let name = f.path().display().to_string();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{name}:3: unknown key `workerz`")),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with(&format!("{name}:4: `api-addr`")),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with(&format!("{name}:5: `heartbeat-timeout-ms`")),
            "{problems:?}"
        );
        assert!(
            problems[3].starts_with(&format!("{name}:6: `plugins` takes")),
            "{problems:?}"
        );
        let broken = file("workers = 3\nthis is not toml\n");
        let problems = read(broken.path()).unwrap_err();
        assert!(problems[0].contains(":2:"), "{problems:?}");
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_the_file_over_the_default() {
        let f = file("workers = 5\nshutdown-grace-ms = 100\nlog-format = \"json\"\n");
        let argv: Vec<OsString> = ["meshplay", "serve", "--workers", "1", "--config"]
            .iter()
            .map(OsString::from)
            .chain([f.path().as_os_str().to_owned()])
            .collect();
        let out = expand(argv.clone()).unwrap();
        let added: Vec<_> = out[argv.len()..]
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect();
        assert_eq!(added, ["--shutdown-grace-ms=100", "--log-format=json"]);
        // Without --config, nothing changes.
        let plain: Vec<OsString> = ["meshplay", "serve"].iter().map(OsString::from).collect();
        assert_eq!(expand(plain.clone()).unwrap(), plain);
    }
}
