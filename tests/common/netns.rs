//! `ip` (iproute2), for the tests that build hosts out of network
//! namespaces (`netns.rs`, `netns_standby.rs`).

use std::process::Command;

/// Runs `ip ARGS`; the error says which command failed and why.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
