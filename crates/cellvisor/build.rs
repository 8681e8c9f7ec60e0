//! The commit `cellvisor --version` names: `git describe --always --dirty` of the tree it was
//! built from, or "unknown" outside a git checkout.

use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(&dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CELLVISOR_COMMIT={commit}");
    // Again when HEAD moves (a commit, a checkout).
    let git = std::path::Path::new(&dir).join("../../.git");
    for f in ["HEAD", "index"] {
        println!("cargo:rerun-if-changed={}", git.join(f).display());
    }
}
