//! The benchmarks run end to end and write their JSON (figures themselves come from full
//! runs, not from tests).

mod common;

use std::process::Command;

#[test]
fn bench_channel_smoke() {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["bench", "channel", "-n", "1", "--quick", "--out"];
    let between_domains = common::can_run();
    let o = Command::new(common::BIN)
        .args({
            args.push(out.path().to_str().unwrap());
            args.push("--between");
            args.push(if between_domains {
                "processes,domains"
            } else {
                "processes"
            });
            &args
        })
        .arg("--agent")
        .arg(if between_domains {
            common::agent()
        } else {
            "/nonexistent".into()
        })
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("channel.json")).unwrap()).unwrap();
    let mut sets = vec!["processes"];
    if between_domains {
        sets.push("domains");
    }
    for set in sets {
        let rows = doc[set].as_array().unwrap();
        // 3 transports × 3 sizes × 1 or 2 placements, every figure positive.
        assert!(rows.len() == 9 || rows.len() == 18, "{set}: {}", rows.len());
        for r in rows {
            assert!(r["rtt_us"].as_f64().unwrap() > 0.0, "{set}: {r}");
        }
        assert!(rows
            .iter()
            .any(|r| r["bandwidth_mib_s"].as_f64().is_some_and(|b| b > 0.0)));
    }
}

#[test]
fn bench_fg_smoke() {
    if !common::can_run() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(common::BIN)
        .args(["bench", "fg", "-n", "6", "--out"])
        .arg(out.path())
        .arg("--agent")
        .arg(common::agent())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("fg.json")).unwrap()).unwrap();
    let modes = doc["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2);
    for m in modes {
        assert_eq!(m["client_us"].as_array().unwrap().len(), 6);
        assert!(
            m["client_us_p99"].as_f64().unwrap() >= m["daemon_us_p50"].as_f64().unwrap(),
            "{m}"
        );
    }
}
