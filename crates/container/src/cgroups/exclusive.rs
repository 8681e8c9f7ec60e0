//! Cores a container holds exclusively: no other container's cpuset may share them.
//!
//! Asked for with the annotation [`ANNOTATION`] beside `linux.resources.cpu.cpus` (the OCI
//! spec has no field for it; a realtime domain of a device profile asks for them `preferred`).
//!
//! - cgroup v1: `cpuset.cpu_exclusive` on the container's cpuset and `sched_load_balance` 0.
//!   The kernel lets a cpuset be exclusive only under an exclusive parent, so every ancestor
//!   below the root is made exclusive too — and then no cpuset beside that ancestor may share
//!   its CPUs (v1's rule). An ancestor left with no exclusive child is made ordinary again.
//!   A new cpuset inherits its parent's CPUs but those its exclusive siblings hold
//!   ([`inheritable`]): the kernel refuses a sibling's CPUs.
//! - cgroup v2: an isolated partition (`cpuset.cpus.partition`), made a "remote" one: every
//!   ancestor below the root lists the CPUs in `cpuset.cpus.exclusive` (Linux 6.7), so no
//!   ancestor has to be a partition itself. The kernel takes the CPUs out of every other
//!   cgroup's effective set and out of the scheduler's load balancing.
//!
//! Changes are made under the hierarchy's lock ([`super::rt::lock`]), one container at a time.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use domain::profile::{cpu_list, cpu_list_string};

use super::rt::ancestors;
use crate::config_err;
use crate::error::{Error, Result};

/// The annotation that asks for the container's `linux.resources.cpu.cpus` exclusively.
pub const ANNOTATION: &str = "io.cellvisor.cpus.exclusive";

/// What the annotation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Want {
    /// `false`, or no annotation.
    #[default]
    No,
    /// `true`: the cores exclusively, or the container is refused.
    Required,
    /// `preferred`: exclusively where the kernel allows it; else the cores only (said on
    /// stderr). On cgroup v1 another cpuset beside cellvisor's sharing CPUs with it (a
    /// container manager's parent group) keeps the kernel from it.
    Preferred,
}

/// What these annotations ask for: `true`, `preferred` and `false` are the values.
pub fn asked(annotations: Option<&HashMap<String, String>>) -> Result<Want> {
    match annotations
        .and_then(|a| a.get(ANNOTATION))
        .map(String::as_str)
    {
        None | Some("false") => Ok(Want::No),
        Some("true") => Ok(Want::Required),
        Some("preferred") => Ok(Want::Preferred),
        Some(v) => Err(config_err!(
            "annotations.{ANNOTATION}: {v:?} is not \"true\", \"preferred\" or \"false\""
        )),
    }
}

fn minus(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|c| !b.contains(c)).collect()
}

fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = a.iter().chain(b).copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|c| b.contains(c)).collect()
}

fn read_cpus(p: &Path) -> Vec<u32> {
    cpu_list(fs::read_to_string(p).unwrap_or_default().trim())
}

fn read_flag(p: &Path) -> bool {
    fs::read_to_string(p).is_ok_and(|s| s.trim() == "1")
}

fn children(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// The v1 cpusets beside `dir` (its parent's other children) that hold CPUs exclusively, with
/// their CPUs.
fn exclusive_siblings(dir: &Path) -> Vec<(PathBuf, Vec<u32>)> {
    let Some(parent) = dir.parent() else {
        return Vec::new();
    };
    // v1 lets a cpuset be exclusive only under an exclusive parent: under an ordinary one
    // (cellvisor's own while no core is held) there is nothing to look for, and no reason to
    // read every sibling's flag, which made a container's start grow with their number.
    if parent.join("cpuset.cpu_exclusive").exists()
        && !read_flag(&parent.join("cpuset.cpu_exclusive"))
    {
        return Vec::new();
    }
    children(parent)
        .into_iter()
        .filter(|c| c != dir && read_flag(&c.join("cpuset.cpu_exclusive")))
        .map(|c| {
            let cpus = read_cpus(&c.join("cpuset.cpus"));
            (c, cpus)
        })
        .collect()
}

/// v1: the CPUs a new cpuset `dir` inherits: its parent's but those an exclusive sibling
/// holds. An error when nothing is left.
pub fn inheritable(dir: &Path) -> Result<String> {
    let parent = dir.parent().unwrap_or(dir);
    let mut cpus = read_cpus(&parent.join("cpuset.cpus"));
    let held = exclusive_siblings(dir);
    for (_, h) in &held {
        cpus = minus(&cpus, h);
    }
    if cpus.is_empty() && !held.is_empty() {
        let who: Vec<String> = held.iter().map(|(p, _)| p.display().to_string()).collect();
        return Err(Error::Msg(format!(
            "cgroup {}: no CPU is left for it: {} hold every CPU of its parent exclusively",
            dir.display(),
            who.join(", ")
        )));
    }
    Ok(cpu_list_string(&cpus))
}

/// v1: why `dir` cannot have `cpus`: the exclusive sibling holding some of them, if one does.
pub fn explain(dir: &Path, cpus: &str) -> Option<String> {
    let want = cpu_list(cpus);
    exclusive_siblings(dir).into_iter().find_map(|(p, h)| {
        let both = intersect(&want, &h);
        (!both.is_empty()).then(|| {
            format!(
                "cgroup {}: cpus {cpus}: {} {} held exclusively by {}",
                dir.display(),
                if both.len() == 1 { "cpu" } else { "cpus" },
                cpu_list_string(&both),
                p.display()
            )
        })
    })
}

/// The cpuset beside `dir` (v1) that shares CPUs with it: what the kernel's refusal of an
/// exclusive flag (EINVAL, naming no one) is about.
fn sharing(dir: &Path) -> Option<PathBuf> {
    let mine = read_cpus(&dir.join("cpuset.cpus"));
    children(dir.parent()?)
        .into_iter()
        .find(|s| s != dir && !intersect(&mine, &read_cpus(&s.join("cpuset.cpus"))).is_empty())
}

/// v1: hold `dir`'s CPUs exclusively (its cpuset.cpus is written): its ancestors made
/// exclusive, top first, then itself, without load balancing.
pub fn claim_v1(mount: &Path, dir: &Path) -> Result<()> {
    let cpus = fs::read_to_string(dir.join("cpuset.cpus")).unwrap_or_default();
    let cpus = cpus.trim();
    for a in ancestors(mount, dir) {
        let f = a.join("cpuset.cpu_exclusive");
        if read_flag(&f) {
            continue;
        }
        if let Err(e) = fs::write(&f, "1") {
            return Err(Error::Msg(match sharing(&a) {
                Some(o) => format!(
                    "cpus {cpus} exclusively: cgroup v1 needs {} exclusive as well, and {} shares its CPUs",
                    a.display(),
                    o.display()
                ),
                None => format!(
                    "cpus {cpus} exclusively: making {} exclusive: {e}",
                    a.display()
                ),
            }));
        }
    }
    if let Err(e) = fs::write(dir.join("cpuset.cpu_exclusive"), "1") {
        return Err(Error::Msg(match sharing(dir) {
            Some(o) => format!("cpus {cpus} exclusively: {} has some of them", o.display()),
            None => format!("cpus {cpus} exclusively: {e}"),
        }));
    }
    fs::write(dir.join("cpuset.sched_load_balance"), "0").map_err(|e| Error::Io {
        what: format!("turning load balancing off in {}", dir.display()),
        source: e,
    })?;
    Ok(())
}

/// v1: `dir` (which held CPUs exclusively) is gone: every ancestor left with no exclusive
/// child is made ordinary again, bottom up (best effort).
pub fn release_v1(mount: &Path, dir: &Path) {
    for a in ancestors(mount, dir).iter().rev() {
        let held = children(a)
            .iter()
            .any(|c| read_flag(&c.join("cpuset.cpu_exclusive")));
        if held {
            break;
        }
        let _ = fs::write(a.join("cpuset.cpu_exclusive"), "0");
    }
}

/// v2: hold `cpus` exclusively in `dir`, an isolated partition: each ancestor below `root`
/// lists them in `cpuset.cpus.exclusive`, top first, then `dir` takes them and becomes the
/// partition. The kernel's verdict is read back: an invalid partition is an error.
pub fn claim_v2(root: &Path, dir: &Path, cpus: &str) -> Result<()> {
    let mine = cpu_list(cpus);
    if !dir.join("cpuset.cpus.exclusive").exists() {
        return Err(Error::Msg(format!(
            "cpus {cpus} exclusively: this kernel's cgroup v2 has no cpuset.cpus.exclusive (Linux 6.7 and later)"
        )));
    }
    let write = |p: &Path, v: &str| {
        fs::write(p, v).map_err(|e| Error::Io {
            what: format!("cpus {cpus} exclusively: writing {v:?} to {}", p.display()),
            source: e,
        })
    };
    for a in ancestors(root, dir) {
        let f = a.join("cpuset.cpus.exclusive");
        let now = read_cpus(&f);
        if minus(&mine, &now).is_empty() {
            continue;
        }
        write(&f, &cpu_list_string(&union(&now, &mine)))?;
    }
    write(&dir.join("cpuset.cpus.exclusive"), cpus)?;
    write(&dir.join("cpuset.cpus.partition"), "isolated")?;
    let state = fs::read_to_string(dir.join("cpuset.cpus.partition")).unwrap_or_default();
    if state.trim() != "isolated" {
        return Err(Error::Msg(format!(
            "cpus {cpus} exclusively: the kernel made {} {:?}, not an isolated partition",
            dir.display(),
            state.trim()
        )));
    }
    Ok(())
}

/// v2: `dir`, which held `cpus`, is gone: each ancestor, bottom up, lists them no more but
/// those another child of it still holds (best effort).
pub fn release_v2(root: &Path, dir: &Path, cpus: &[u32]) {
    for a in ancestors(root, dir).iter().rev() {
        let f = a.join("cpuset.cpus.exclusive");
        let still: Vec<u32> = children(a)
            .iter()
            .flat_map(|c| read_cpus(&c.join("cpuset.cpus.exclusive")))
            .collect();
        let keep = minus(&read_cpus(&f), &minus(cpus, &still));
        let _ = fs::write(&f, cpu_list_string(&keep));
    }
}

/// The CPUs `dir` holds exclusively now (v2's `cpuset.cpus.exclusive`; v1's cpus when it is
/// `cpu_exclusive`), read before it is removed.
pub fn held(dir: &Path, v2: bool) -> Vec<u32> {
    if v2 {
        read_cpus(&dir.join("cpuset.cpus.exclusive"))
    } else if read_flag(&dir.join("cpuset.cpu_exclusive")) {
        read_cpus(&dir.join("cpuset.cpus"))
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (f, v) in files {
            fs::write(dir.join(f), v).unwrap();
        }
    }

    fn rd(p: &Path) -> String {
        fs::read_to_string(p).unwrap().trim().to_string()
    }

    #[test]
    fn only_true_and_false_are_asked() {
        let a = |v: &str| HashMap::from([(ANNOTATION.to_string(), v.to_string())]);
        assert_eq!(asked(None).unwrap(), Want::No);
        assert_eq!(asked(Some(&a("true"))).unwrap(), Want::Required);
        assert_eq!(asked(Some(&a("preferred"))).unwrap(), Want::Preferred);
        assert_eq!(asked(Some(&a("false"))).unwrap(), Want::No);
        let e = asked(Some(&a("yes"))).unwrap_err().to_string();
        assert!(e.contains(ANNOTATION) && e.contains("\"yes\""), "{e}");
    }

    #[test]
    fn a_new_cpuset_inherits_what_no_sibling_holds() {
        let t = tempfile::tempdir().unwrap();
        let cv = t.path().join("cellvisor");
        set(&cv, &[("cpuset.cpus", "0-3\n")]);
        set(
            &cv.join("rt"),
            &[("cpuset.cpus", "2-3\n"), ("cpuset.cpu_exclusive", "1\n")],
        );
        set(
            &cv.join("plain"),
            &[("cpuset.cpus", "0-1\n"), ("cpuset.cpu_exclusive", "0\n")],
        );
        assert_eq!(inheritable(&cv.join("new")).unwrap(), "0-1");
        let e = explain(&cv.join("new"), "1-2").unwrap();
        assert!(
            e.contains("cpu 2 held exclusively by") && e.ends_with("rt"),
            "{e}"
        );
        assert!(explain(&cv.join("new"), "0-1").is_none());
        set(
            &cv.join("rt2"),
            &[("cpuset.cpus", "0-1\n"), ("cpuset.cpu_exclusive", "1\n")],
        );
        let e = inheritable(&cv.join("new")).unwrap_err().to_string();
        assert!(e.contains("no CPU is left"), "{e}");
        // Under an ordinary parent no sibling can be exclusive (the kernel's rule): the
        // siblings are not read at all.
        set(&cv, &[("cpuset.cpu_exclusive", "0\n")]);
        assert_eq!(inheritable(&cv.join("new")).unwrap(), "0-3");
        set(&cv, &[("cpuset.cpu_exclusive", "1\n")]);
        assert!(inheritable(&cv.join("new")).is_err());
    }

    #[test]
    fn v1_ancestors_are_made_exclusive_and_ordinary_again() {
        let t = tempfile::tempdir().unwrap();
        let mount = t.path().join("cpuset");
        let cv = mount.join("cellvisor");
        let me = cv.join("rt");
        set(
            &mount,
            &[("cpuset.cpus", "0-1"), ("cpuset.cpu_exclusive", "1")],
        );
        set(
            &cv,
            &[("cpuset.cpus", "0-1"), ("cpuset.cpu_exclusive", "0")],
        );
        set(
            &me,
            &[
                ("cpuset.cpus", "1"),
                ("cpuset.cpu_exclusive", "0"),
                ("cpuset.sched_load_balance", "1"),
            ],
        );
        claim_v1(&mount, &me).unwrap();
        assert_eq!(rd(&cv.join("cpuset.cpu_exclusive")), "1");
        assert_eq!(rd(&me.join("cpuset.cpu_exclusive")), "1");
        assert_eq!(rd(&me.join("cpuset.sched_load_balance")), "0");
        assert_eq!(held(&me, false), vec![1]);
        fs::remove_dir_all(&me).unwrap();
        release_v1(&mount, &me);
        assert_eq!(rd(&cv.join("cpuset.cpu_exclusive")), "0");
    }

    #[test]
    fn v2_ancestors_list_the_cpus_until_no_child_holds_them() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let cv = root.join("cellvisor");
        let (a, b) = (cv.join("a"), cv.join("b"));
        set(&cv, &[("cpuset.cpus.exclusive", "")]);
        for d in [&a, &b] {
            set(
                d,
                &[
                    ("cpuset.cpus.exclusive", ""),
                    ("cpuset.cpus.partition", "member"),
                ],
            );
        }
        claim_v2(root, &a, "3").unwrap();
        assert_eq!(rd(&cv.join("cpuset.cpus.exclusive")), "3");
        assert_eq!(rd(&a.join("cpuset.cpus.partition")), "isolated");
        claim_v2(root, &b, "1-2").unwrap();
        assert_eq!(rd(&cv.join("cpuset.cpus.exclusive")), "1-3");
        fs::remove_dir_all(&a).unwrap();
        release_v2(root, &a, &[3]);
        assert_eq!(rd(&cv.join("cpuset.cpus.exclusive")), "1-2");
        // The kernel's verdict read back: a partition it made invalid is said.
        set(&a, &[("cpuset.cpus.exclusive", "")]);
        fs::create_dir_all(a.join("cpuset.cpus.partition")).unwrap();
        assert!(claim_v2(root, &a, "3").is_err());
    }
}
