//! Phase timestamps for finding where a container start spends its time. Off unless the
//! environment names a file in `CELLVISOR_TIMINGS`; then each runtime process appends one JSON
//! line (`{"verb": ..., "phases": [[name, µs since the process began], ...]}`) when it ends.

use std::cell::RefCell;
use std::io::Write;
use std::time::Instant;

struct Timings {
    file: String,
    t0: Instant,
    marks: Vec<(&'static str, u64)>,
}

thread_local! {
    static T: RefCell<Option<Timings>> = const { RefCell::new(None) };
}

/// Start recording if `CELLVISOR_TIMINGS` is set.
pub fn init() {
    if let Some(file) = std::env::var_os("CELLVISOR_TIMINGS") {
        T.with(|t| {
            *t.borrow_mut() = Some(Timings {
                file: file.to_string_lossy().into_owned(),
                t0: Instant::now(),
                marks: Vec::new(),
            })
        });
    }
}

/// Record that `phase` has just ended.
pub fn mark(phase: &'static str) {
    T.with(|t| {
        if let Some(t) = t.borrow_mut().as_mut() {
            let us = t.t0.elapsed().as_micros() as u64;
            t.marks.push((phase, us));
        }
    });
}

/// For the container process: open the file now (before its root moves), so `flush_to` can
/// write the marks later.
pub fn open_file() -> Option<std::fs::File> {
    T.with(|t| {
        let t = t.borrow();
        let t = t.as_ref()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&t.file)
            .ok()
    })
}

/// Append this process's marks to an already open file.
pub fn flush_to(f: &mut std::fs::File, verb: &str) {
    T.with(|t| {
        if let Some(t) = t.borrow().as_ref() {
            let line = serde_json::json!({"verb": verb, "phases": t.marks});
            let _ = writeln!(f, "{line}");
        }
    });
}

/// Append this process's marks to the file.
pub fn flush(verb: &str) {
    T.with(|t| {
        if let Some(t) = t.borrow_mut().take() {
            let line = serde_json::json!({"verb": verb, "phases": t.marks});
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&t.file)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    });
}
