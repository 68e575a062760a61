//! The definitions against the VMs: a tenant's (through a real `Vm`) and
//! a test file's.

use super::*;
use crate::mesophyll::db_client::DbClient;
use crate::mesophyll::message::{Event, Tenant};
use crate::worker::loaded::LoadedCatalogue;
use crate::worker::services::Services;
use crate::worker::vm::{Vm, VmLimits};
use std::collections::BTreeSet;
use std::time::Duration;

/// Lists every global that Luau's own libraries do not have, and the
/// members of those that are tables.
const ENUMERATE: &str = r#"
local builtin = ...
local out = {}
for name, value in _G do
	if not builtin[name] then
		table.insert(out, name)
		if type(value) == "table" then
			for member in value do
				table.insert(out, name .. "." .. member)
			end
		end
	end
end
return out
"#;

/// Which of the names given (`global` or `global.member`) resolve to
/// nothing: a member made on first use (`http.fetch`) is not listed by
/// `pairs`, but it resolves.
const UNRESOLVED: &str = r#"
local names = ...
local out = {}
for _, name in names do
	local global, member = string.match(name, "^([%w_]+)%.?([%w_]*)$")
	local value = _G[global]
	if value ~= nil and member ~= "" then
		value = if type(value) == "table" then value[member] else nil
	end
	if value == nil then
		table.insert(out, name)
	end
end
return out
"#;

/// The globals of a plain Luau, which are not ours to declare.
fn builtins() -> BTreeSet<String> {
    let lua = mlua::Lua::new();
    let names: Vec<String> = lua
        .load("local t = {} for k in _G do table.insert(t, k) end return t")
        .call(())
        .unwrap();
    names.into_iter().collect()
}

fn builtin_table(lua: &mlua::Lua) -> mlua::Table {
    let t = lua.create_table().unwrap();
    for name in builtins() {
        t.set(name, true).unwrap();
    }
    t
}

fn list_table(lua: &mlua::Lua, values: &BTreeSet<String>) -> mlua::Table {
    lua.create_sequence_from(values.iter().cloned()).unwrap()
}

/// `values` as a Luau table constructor of strings.
fn luau_list(values: &BTreeSet<String>) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("{{{}}}", quoted.join(", "))
}

/// A tenant's VM, as a worker builds it.
fn tenant_vm() -> Vm {
    // A store client that is never called: with none, `kv` and the
    // others are tables whose every index fails, with no members to list.
    let db = DbClient::new(
        &crate::mesophyll::addresses::Addresses::one("127.0.0.1:9"),
        0,
        "unused",
        None,
    );
    let services = Services::new(0, Some(db), None, LoadedCatalogue::default());
    Vm::new(&Tenant::new("t", "1"), VmLimits::default(), &services).unwrap()
}

/// Runs `chunk` (which takes one table argument as `...`) in a tenant's VM
/// with `argument` as a list of strings, and answers the list it returns.
async fn in_tenant_vm(chunk: &str, argument: String) -> BTreeSet<String> {
    let code = format!("return (function(...) {chunk} end)({argument})");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let found = tenant_vm()
        .run_script("definitions", &code, &Event::default(), deadline)
        .await
        .unwrap();
    serde_json::from_value::<Vec<String>>(found.to_value())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn test_vm() -> mlua::Lua {
    let bindings = crate::author::testing::world::Bindings {
        stage: Default::default(),
        stand_in: Default::default(),
        plugin: "p".into(),
        dispatch_timeout: Duration::from_secs(1),
    };
    crate::author::testing::test_vm(&bindings, &Default::default())
        .unwrap()
        .0
}

fn in_test_vm(lua: &mlua::Lua, chunk: &str, argument: mlua::Table) -> BTreeSet<String> {
    let found: Vec<String> = lua.load(chunk).call(argument).unwrap();
    found.into_iter().collect()
}

#[tokio::test]
async fn every_global_is_declared_and_every_declaration_is_a_global() {
    let builtin: BTreeSet<String> = builtins();
    let as_set = format!(
        "(function() local s = {{}} for _, n in {} do s[n] = true end return s end)()",
        luau_list(&builtin)
    );
    let plugin = in_tenant_vm(ENUMERATE, as_set).await;
    let lua = test_vm();
    let test = in_test_vm(&lua, ENUMERATE, builtin_table(&lua));
    assert!(
        plugin.contains("kv.get") && test.contains("expect"),
        "{plugin:?} {test:?}"
    );
    let declared = declared();
    let registered: BTreeSet<String> = plugin.union(&test).cloned().collect();
    let missing: Vec<_> = registered.difference(&declared).collect();
    assert!(
        missing.is_empty(),
        "registered but not in meshplay.d.luau: {missing:?}"
    );
    let unresolved_in_plugin = in_tenant_vm(UNRESOLVED, luau_list(&declared)).await;
    let unresolved_in_test = in_test_vm(&lua, UNRESOLVED, list_table(&lua, &declared));
    let extra: Vec<_> = unresolved_in_plugin
        .intersection(&unresolved_in_test)
        .collect();
    assert!(
        extra.is_empty(),
        "in meshplay.d.luau but in no VM: {extra:?}"
    );
}

#[test]
fn setup_writes_the_files_and_keeps_the_authors_own() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".luaurc"), "{}").unwrap();
    let (written, kept) = setup_editor(dir.path()).unwrap();
    assert_eq!(kept, vec![dir.path().join(".luaurc")]);
    assert_eq!(written.len(), 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
        DEFINITIONS
    );
    let settings = std::fs::read_to_string(dir.path().join(".vscode/settings.json")).unwrap();
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
    assert_eq!(settings["luau-lsp.types.definitionFiles"][0], FILE_NAME);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".luaurc")).unwrap(),
        "{}"
    );
}
