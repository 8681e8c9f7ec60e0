//! Crash points, for the tests of crash safety: a process started with
//! `CELLVISOR_CRASH_AT=<point>` in its environment kills itself with SIGKILL when it reaches
//! `point("<point>")`, exactly there and not by luck of timing. Without the variable a point
//! costs one comparison. The points are named `verb:step` (e.g. `up:forked`); docs/platform.md
//! lists them.

use std::sync::OnceLock;

static AT: OnceLock<Option<String>> = OnceLock::new();

/// Die here, by SIGKILL, if this is the point the environment names.
pub fn point(name: &str) {
    let at = AT.get_or_init(|| std::env::var("CELLVISOR_CRASH_AT").ok());
    if at.as_deref() == Some(name) {
        // SAFETY: kill of our own process; SIGKILL cannot be caught, nothing runs after it.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
