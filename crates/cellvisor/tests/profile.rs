//! `cellvisor profile`: the embedded phone profile checks out, a bad one is refused with one
//! line per problem and its place, and the policy answers deny by default.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cellvisor");

fn cv(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn embedded_profile_checks_out() {
    let o = cv(&["profile", "check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("3 domains") && out.contains("realtime"),
        "{out}"
    );
}

#[test]
fn bad_profile_gets_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "name = \"x\"\nbase = \"r\"\n[[domain]]\nname = \"a\"\nrole = \"trusted\"\ncommand = []\n[[allow]]\nfrom = \"a\"\nto = \"zz\"\nchannel = \"c\"\nbuffer = \"64K\"\n").unwrap();
    let o = cv(&["profile", "check", f.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].ends_with("bad.toml:6:11: domain \"a\": command must not be empty"),
        "{err}"
    );
    assert!(
        lines[1].ends_with("bad.toml:9:6: allow: no domain \"zz\""),
        "{err}"
    );
    assert_eq!(lines[2], "2 problems in the profile");
}

#[test]
fn policy_is_deny_by_default() {
    assert!(cv(&["profile", "allows", "common", "trusted", "messages"])
        .status
        .success());
    for (f, t, c) in [
        ("trusted", "common", "messages"),
        ("common", "modem", "telephony"),
        ("common", "trusted", "files"),
    ] {
        let o = cv(&["profile", "allows", f, t, c]);
        assert!(!o.status.success(), "{f} -> {t} {c}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("denied"));
    }
    let o = cv(&[
        "profile", "allows", "--buffer", "1M", "common", "trusted", "messages",
    ]);
    assert!(!o.status.success(), "a buffer above the rule's is denied");
}

/// A profile path that names an endless device is refused in one line, not read for ever.
#[test]
fn an_endless_profile_is_refused() {
    let o = cv(&["profile", "check", "/dev/zero"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/dev/zero: more than"), "{err}");
    assert!(err.lines().count() <= 2, "{err}");
}

/// A NUL byte in a profile's string (here a command) is refused at its place.
#[test]
fn a_nul_in_a_profile_is_refused_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nul.toml");
    std::fs::write(
        &f,
        "name = \"x\"\nbase = \"r\"\n[[domain]]\nname = \"a\"\nrole = \"trusted\"\ncommand = [\"sh\", \"-c\", \"cut\\u0000here\"]\n",
    )
    .unwrap();
    let o = cv(&["profile", "check", f.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines().next().unwrap_or_default().ends_with(
            "nul.toml:6:28: a string holds a NUL byte, which no command, path or name can carry"
        ),
        "{err}"
    );
}
