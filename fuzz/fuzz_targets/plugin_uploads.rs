//! A plugin upload: a manifest and a file map, checked and compiled as the
//! master does before it accepts one (TOML, names, paths, the Luau
//! compiler on whatever source the entry holds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::catalogue::plugin;
use meshplay::mesophyll::db::PluginBundle;

#[derive(Debug, arbitrary::Arbitrary)]
struct Upload {
    name: String,
    manifest: String,
    files: Vec<(String, String)>,
}

fuzz_target!(|u: Upload| {
    let bundle = PluginBundle {
        name: u.name,
        manifest: u.manifest,
        files: u.files.into_iter().collect(),
    };
    if let Ok(p) = plugin::build(&bundle) {
        assert!(bundle.files.keys().all(|f| plugin::valid_file_name(f)));
        assert!(!p.bytecode.is_empty());
    }
    let _ = plugin::compile(bundle.manifest.as_bytes());
});
