//! OCI hooks: run a program with the container's state on its stdin, its own args and env,
//! and an optional timeout; a failing hook fails the lifecycle step that ran it.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// Run `hooks` in order; `stage` names them in errors.
pub fn run(stage: &str, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    let input = serde_json::to_vec(state).unwrap_or_default();
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, &input)
            .map_err(|e| Error::Msg(format!("{stage} hook [{i}] {}: {e}", h.path().display())))?;
    }
    Ok(())
}

fn run_one(h: &Hook, input: &[u8]) -> std::result::Result<(), String> {
    let args = h.args().as_deref().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in h.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine; so is one that exits first, whatever
        // this process's SIGPIPE disposition is.
        without_sigpipe(|| {
            let _ = stdin.write_all(input);
        });
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let err = err.trim();
                return Err(if err.is_empty() {
                    format!("exited with {status}")
                } else {
                    format!("exited with {status}: {err}")
                });
            }
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s", h.timeout().unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Run `f` with SIGPIPE blocked in this thread, and discard one raised meanwhile.
fn without_sigpipe(f: impl FnOnce()) {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    let blocked =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe), Some(&mut old))
            .is_ok();
    f();
    if blocked {
        if !old.contains(Signal::SIGPIPE) {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: consumes a pending SIGPIPE, if any, without waiting.
            unsafe { libc::sigtimedwait(pipe.as_ref(), std::ptr::null_mut(), &zero) };
        }
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(j: &str) -> Hook {
        serde_json::from_str(j).unwrap()
    }

    #[test]
    fn hook_gets_state_args_and_env() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {0}; echo \"$1 $FOO\" >> {0}","x","arg1"],"env":["FOO=bar"]}}"#,
            out.display()
        ));
        run("prestart", &[h], &serde_json::json!({"id": "c1"})).unwrap();
        let s = std::fs::read_to_string(&out).unwrap();
        assert!(s.starts_with(r#"{"id":"c1"}"#), "{s}");
        assert!(s.ends_with("arg1 bar\n"), "{s}");
    }

    #[test]
    fn a_hook_that_does_not_read_its_stdin_just_fails() {
        // A large state document and a hook that exits at once: the write hits a closed pipe.
        let big = serde_json::json!({"pad": "x".repeat(1 << 20)});
        let e = run("createRuntime", &[hook(r#"{"path":"/bin/false"}"#)], &big)
            .unwrap_err()
            .to_string();
        assert!(e.contains("createRuntime hook [0]"), "{e}");
    }

    #[test]
    fn failing_and_slow_hooks_fail() {
        let e = run(
            "poststart",
            &[hook(
                r#"{"path":"/bin/sh","args":["sh","-c","echo nope >&2; exit 3"]}"#,
            )],
            &serde_json::json!({}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("poststart hook [0]") && e.contains("nope"),
            "{e}"
        );
        let e = run(
            "prestart",
            &[hook(
                r#"{"path":"/bin/sleep","args":["sleep","5"],"timeout":1}"#,
            )],
            &serde_json::json!({}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timed out"), "{e}");
    }
}
