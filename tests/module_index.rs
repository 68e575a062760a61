//! Every module is named in its parent's opening doc comment: the index a
//! reader walks to find their way (`src/master/mod.rs` lists what the
//! master is made of, and so on down). A module added without its line
//! there fails here, with the file and the name.

use std::path::Path;

/// The modules `source` declares (`mod x;`, `pub mod x;`, `pub(crate) mod
/// x;`, under a `#[cfg]` or not), but `tests`.
fn declared(source: &str) -> Vec<String> {
    source
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = match l.strip_prefix("pub(") {
                Some(rest) => rest.split_once(") ")?.1,
                None => l,
            };
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            (name != "tests").then(|| name.to_owned())
        })
        .collect()
}

/// The opening `//!` block of `source`.
fn index(source: &str) -> String {
    source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn walk(dir: &Path, misses: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, misses);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let index = index(&source);
        for name in declared(&source) {
            if !index.contains(&format!("`{name}`")) {
                misses.push(format!("{}: `{name}`", path.display()));
            }
        }
    }
}

#[test]
fn every_module_is_named_in_its_parents_index() {
    let mut misses = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut misses,
    );
    assert!(
        misses.is_empty(),
        "modules missing from their parent's opening doc comment (add a line `- [`name`]: what it is;`):\n{}",
        misses.join("\n")
    );
}

#[test]
fn declarations_are_read_in_every_form() {
    let source = "mod a;\npub mod b;\npub(crate) mod c;\n#[cfg(test)]\nmod tests;\n    pub(super) mod d;\nfn mod_e() {}\n";
    assert_eq!(declared(source), ["a", "b", "c", "d"]);
}
