//! `plugin.toml` as raw text, every field included (`allowed_hosts`,
//! `[variables]`, `emits_to`, filters, limits): read and checked as the
//! master does at upload, with a one-line entry file. Whatever the bytes,
//! it ends without a panic, and what passes keeps its promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::catalogue::manifest::{MAX_VARIABLES, valid_variable_name};
use meshplay::catalogue::plugin::{self, MAX_ALLOWED_HOSTS};
use meshplay::mesophyll::db::PluginBundle;

fuzz_target!(|manifest: &str| {
    let bundle = PluginBundle {
        name: "fuzzed".into(),
        manifest: manifest.into(),
        files: [("init.luau".to_string(), "return {}".to_string())].into(),
    };
    let Ok(p) = plugin::build(&bundle) else {
        return;
    };
    let m = &p.manifest;
    assert!(m.allowed_hosts.len() <= MAX_ALLOWED_HOSTS);
    assert!(m.variables.len() <= MAX_VARIABLES);
    for (name, var) in &m.variables {
        assert!(valid_variable_name(name), "{name:?}");
        assert!(!(var.secret && var.default.is_some()));
    }
    for host in &m.allowed_hosts {
        let again: meshplay::catalogue::allowed_host::AllowedHost = host.as_str().parse().unwrap();
        assert_eq!(&again, host);
    }
});
