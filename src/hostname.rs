//! This machine's name, as `gethostname(2)` says it: the master puts it in
//! the certificate it makes, a joining worker tells the master it (for
//! `meshplay workers`).

/// The hostname, or `None` when the system gives none (or not UTF-8).
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-ends
    // what it writes when it fits, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = String::from_utf8(buf[..end].to_vec()).ok()?;
    (!name.is_empty()).then_some(name)
}
