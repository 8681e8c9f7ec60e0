//! What a benchmark run stopped part way (a signal) leaves behind, removed: its children,
//! the containers in its runtimes' state, the cgroups of its domains, its work directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::backend::Backend;

/// Remove what a suite run under `work` made, when it is stopped part way (a signal): its
/// child processes (runtimes, native domains), every container in the runtimes' state
/// directories (the suite's and the scalability's, detached domains and microVMs included),
/// the cgroups of this run's domains and the scalability's parents, and `work` itself.
pub fn teardown(work: &Path, backends: &[Backend]) {
    let me = std::process::id() as i32;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for pid in rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            if container::util::proc_parent(pid).is_some_and(|(_, ppid)| ppid == me) {
                // SAFETY: kill(2) on a child of ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    for b in backends {
        let Some(rt) = &b.runtime else { continue };
        for state in [
            work.join(format!("state-{}", b.name())),
            work.join(format!("scale/state-{}", b.name())),
        ] {
            for e in std::fs::read_dir(&state).into_iter().flatten().flatten() {
                let _ = Command::new(rt)
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    // What a runtime killed part way through a create left: cgroups named after this run's
    // containers (suite-, cvspin-, cvscale-<pid>), their processes killed first.
    let pid = std::process::id();
    let ours = [
        format!("suite-{pid}-"),
        format!("cvspin-{pid}-"),
        format!("cvscale-{pid}"),
    ];
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        remove_cgroups(&root.path(), &ours, 3);
    }
    remove_cgroups(Path::new("/sys/fs/cgroup"), &ours, 3);
    let _ = std::fs::remove_dir_all(work);
}

/// Remove the cgroups below `dir` (at most `depth` levels down) whose names start with one of
/// `names`, with everything under them: processes killed, then directories deepest first.
fn remove_cgroups(dir: &Path, names: &[String], depth: usize) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if names.iter().any(|n| name.starts_with(n.as_str())) {
            remove_tree(&p);
        } else if depth > 1 {
            remove_cgroups(&p, names, depth - 1);
        }
    }
}

fn remove_tree(cg: &Path) {
    for e in std::fs::read_dir(cg).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_tree(&e.path());
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a process of this run's own domain.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
