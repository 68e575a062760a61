//! `meshplay.d.luau`: every global a plugin's code and a plugin's tests
//! see, in luau-lsp's definition format, so that an editor completes
//! `kv.get`, knows what `http.fetch` returns and flags a typo in
//! `timers.aftr`. It ships in the binary; `meshplay setup editor` writes
//! it beside a project with the settings that point luau-lsp at it.
//!
//! One file serves both kinds of file: a test file's extra globals
//! (`test`, `expect`, `dispatch`, `clock`, ...) and extra members
//! (`http.mock`, `vars.set`, `timers.pending`) are declared beside the
//! plugin's and marked so in their comments, since luau-lsp applies one
//! set of definitions to a whole workspace.
//!
//! The test below keeps the file honest: every global and member a
//! tenant's VM or a test VM registers is declared, and everything
//! declared is registered by one of them.

use crate::author::AuthorError;
use std::path::{Path, PathBuf};

/// The definitions.
pub const DEFINITIONS: &str = include_str!("meshplay.d.luau");

/// The file name luau-lsp is pointed at.
pub const FILE_NAME: &str = "meshplay.d.luau";

/// What `meshplay setup editor` writes, beside the definitions.
const LUAURC: &str = r#"{
	"languageMode": "nonstrict",
	"lint": { "*": true, "LocalUnused": false },
	"lintErrors": false
}
"#;

/// VS Code's settings for the luau-lsp extension.
const VSCODE_SETTINGS: &str = r#"{
	"luau-lsp.platform.type": "standard",
	"luau-lsp.types.definitionFiles": ["meshplay.d.luau"],
	"luau-lsp.types.roblox": false,
	"luau-lsp.sourcemap.enabled": false,
	"files.associations": { "*.luau": "luau" }
}
"#;

/// Writes `meshplay.d.luau`, `.luaurc` and `.vscode/settings.json` into
/// `dir`; answers the files written. A `.luaurc` or settings file that is
/// there already is kept (it is the author's), and named in the answer's
/// second list; the definitions are always brought up to date.
pub fn setup_editor(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), AuthorError> {
    let mut written = Vec::new();
    let mut kept = Vec::new();
    let definitions = dir.join(FILE_NAME);
    std::fs::write(&definitions, DEFINITIONS)?;
    written.push(definitions);
    for (path, text) in [
        (dir.join(".luaurc"), LUAURC),
        (dir.join(".vscode/settings.json"), VSCODE_SETTINGS),
    ] {
        if path.exists() {
            kept.push(path);
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok((written, kept))
}

/// The globals and their members the definitions declare: `kv`,
/// `kv.get`, ... (one level of members; the fields of a member's own
/// table are its type, not more names).
pub fn declared() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut open: Option<String> = None;
    for line in DEFINITIONS.lines() {
        if let Some(rest) = line.strip_prefix("declare function ") {
            names.insert(identifier(rest).to_owned());
        } else if let Some(rest) = line.strip_prefix("declare ") {
            let name = identifier(rest).to_owned();
            names.insert(name.clone());
            if line.trim_end().ends_with('{') {
                open = Some(name);
            }
        } else if line.starts_with('}') {
            open = None;
        } else if let Some(global) = &open
            && let Some(member) = line.strip_prefix('\t')
            && !member.starts_with(['\t', '-', ' '])
            && !member.is_empty()
        {
            names.insert(format!("{global}.{}", identifier(member)));
        }
    }
    names
}

fn identifier(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests;
