//! The docs a newcomer walks: README.md stays short (under 250 lines) and
//! links every page of `docs/`; README, `docs/` and BENCHMARKS.md link
//! nothing outside the repository, and every link they have lands on a
//! file that is there (and on a heading that is there, for an anchor).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pages checked: README.md, BENCHMARKS.md and every `docs/*.md`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages
}

/// `text` without its fenced code blocks.
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every `[text](target)` target of `text`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            let target = &rest[..end];
            if !target.contains(char::is_whitespace) {
                found.push(target.to_owned());
            }
        }
    }
    found
}

/// The anchors of a Markdown page's headings, as GitHub makes them.
fn anchors(page: &Path) -> BTreeSet<String> {
    prose(&std::fs::read_to_string(page).unwrap())
        .lines()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| l.starts_with('#'))
        })
        .map(|heading| {
            heading
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn the_readme_is_short_and_maps_every_doc() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines < 250,
        "README.md is {lines} lines: move the detail to docs/"
    );
    let linked = links(&readme);
    for page in pages()
        .iter()
        .filter(|p| p.parent() == Some(&root().join("docs")))
    {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(
            linked
                .iter()
                .any(|l| l.split('#').next() == Some(name.as_str())),
            "README.md does not link {name}"
        );
    }
}

#[test]
fn every_link_lands_inside_the_repository() {
    for page in pages() {
        let text = prose(&std::fs::read_to_string(&page).unwrap());
        let shown = page.strip_prefix(root()).unwrap().display().to_string();
        for link in links(&text) {
            assert!(
                !link.contains("://") && !link.starts_with("mailto:"),
                "{shown} links outside the repository: {link}"
            );
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            assert!(target.exists(), "{shown} links {link}, which is not there");
            if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
                assert!(
                    anchors(&target).contains(anchor),
                    "{shown} links {link}, a heading that is not there"
                );
            }
        }
    }
}
