//! `meshplay diff` and `meshplay deploy` against a real master and its
//! workers, on sled and on PostgreSQL: five plugins as one change, none
//! of it when one of them does not compile, a line diff of a changed
//! plugin, and `--prune`.

mod common;

use common::{Master, Opts, event};
use meshplay::client::DispatchOutcome;
use std::path::Path;
use std::time::Duration;

fn write_plugin(dir: &Path, name: &str, answer: &str) {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nevents = [\"who\"]\n"),
    )
    .unwrap();
    std::fs::write(
        folder.join("init.luau"),
        format!("return {{\n\twho = function()\n\t\treturn \"{answer}\"\n\tend,\n}}\n"),
    )
    .unwrap();
}

/// The answers to `who`, by plugin, once every worker runs revision
/// `revision` or later.
async fn answers(m: &Master) -> Vec<(String, String)> {
    let req = event("who", serde_json::json!({}));
    match m.client.dispatch("user", "1", &req).await.unwrap() {
        DispatchOutcome::Done(d) => d
            .results
            .into_iter()
            .filter_map(|r| Some((r.plugin, r.value?.as_str()?.to_owned())))
            .collect(),
        DispatchOutcome::Accepted(_) => unreachable!("waited"),
    }
}

async fn five_plugins_as_one_change_or_none(opts: Opts) {
    let m = Master::start(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let (plugins, no_filters) = (dir.path().join("plugins"), dir.path().join("filters"));
    std::fs::create_dir_all(&no_filters).unwrap();
    for n in 1..=5 {
        write_plugin(&plugins, &format!("d{n}"), &format!("d{n} v1"));
    }
    std::fs::write(
        plugins.join("d4/init.luau"),
        "return { who = function( end }",
    )
    .unwrap();
    let before = m.client.plugins().await.unwrap().revision;
    let args = |cmd: &'static str| -> Vec<String> {
        vec![
            cmd.into(),
            plugins.display().to_string(),
            "--filters".into(),
            no_filters.display().to_string(),
        ]
    };
    let run = |cmd: &'static str, extra: &[&str]| {
        let mut a = args(cmd);
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        m.cli(&a)
    };

    let (code, out, err) = run("deploy", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("d4") && err.contains("syntax error"), "{err}");
    let after = m.client.plugins().await.unwrap();
    assert_eq!(after.revision, before, "nothing changed");
    assert!(
        !after.plugins.iter().any(|p| p.name.starts_with('d')),
        "{:?}",
        after.plugins
    );

    write_plugin(&plugins, "d4", "d4 v1");
    let (code, out, err) = run("diff", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("(new)").count(), 5, "{out}");
    let (code, out, err) = run("deploy", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "deployed revision {}: put 5 plugins; removed nothing",
            before + 1
        )),
        "one revision: {out}"
    );
    let all = common::eventually(Duration::from_secs(10), "all five answer", || async {
        let a = answers(&m).await;
        (a.len() == 5).then_some(a)
    })
    .await;
    assert_eq!(all[3], ("d4".to_owned(), "d4 v1".to_owned()));

    write_plugin(&plugins, "d2", "d2 v2");
    let (code, out, _) = run("diff", &[]);
    assert_eq!(code, 0);
    assert!(out.contains("~ plugin d2 (changed)"), "{out}");
    assert!(
        out.contains("-\t\treturn \"d2 v1\"") && out.contains("+\t\treturn \"d2 v2\""),
        "{out}"
    );
    assert_eq!(out.matches("plugin d").count(), 1, "only d2 differs: {out}");
    let (code, out, err) = run("deploy", &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = run("diff", &[]);
    assert!(out.contains("no changes"), "{out}");

    std::fs::remove_dir_all(plugins.join("d5")).unwrap();
    let (code, out, err) = run("deploy", &["--prune"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("- plugin d5 (removed)"), "{out}");
    assert!(
        out.contains("plugin echo (in the master's folder: kept)"),
        "{out}"
    );
    let names: Vec<String> = m
        .client
        .plugins()
        .await
        .unwrap()
        .plugins
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        !names.contains(&"d5".to_owned()) && names.contains(&"echo".to_owned()),
        "{names:?}"
    );
}

crate::on_both_stores!(five_plugins_as_one_change_or_none);
