//! What the package and the container image install: their settings
//! files are ones `serve --config` takes (each key a flag, each value one
//! its flag accepts), and they name the paths the package and the image
//! put things in. `packaging/check-deb.sh` (run by CI) installs the
//! package itself.

mod common;

use std::process::Command;

fn check(file: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/");
    let out = Command::new(common::EXE)
        .args(["config", "check", &format!("{path}{file}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn the_packaged_settings_are_valid_and_name_the_installed_paths() {
    for file in ["meshplay.toml", "container.toml"] {
        let flags = check(file);
        for flag in [
            "--data-dir=/var/lib/meshplay",
            "--plugins=/usr/share/meshplay/plugins",
            "--filters=/usr/share/meshplay/filters",
        ] {
            assert!(flags.contains(flag), "{file} lacks {flag}:\n{flags}");
        }
    }
}

#[test]
fn the_unit_runs_serve_as_its_own_user_in_a_sandbox() {
    let unit = include_str!("../packaging/meshplay.service");
    for line in [
        "User=meshplay",
        "ExecStart=/usr/bin/meshplay serve --config /etc/meshplay/meshplay.toml",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/meshplay",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}
