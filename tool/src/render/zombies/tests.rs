use super::*;
use crate::model::parent_info::Headroom;
use crate::model::proctable::{Dated, Key};
use proclens_common::lifecycle::ExitStatus;

fn ctx() -> Context {
    let nginx = ParentInfo {
        cmdline: Some("/usr/sbin/nginx -g daemon off;".into()),
        cgroup: Some("/system.slice/nginx.service".into()),
        unit: Some("nginx.service".into()),
        state: Some("S".into()),
        wchan: Some("do_wait".into()),
        pids_current: Some(7),
        ..Default::default()
    };
    Context {
        parents: [(10, nginx)].into_iter().collect(),
        headroom: Some(Headroom {
            pid_max: 4_194_304,
            tasks: 300,
        }),
    }
}

fn z(pid: u32, ppid: u32, status: ExitStatus, age_s: u64) -> Zombie {
    Zombie {
        key: Key {
            tgid: pid,
            start_ns: 1,
        },
        comm: "child".into(),
        ppid,
        parent_comm: "lazy".into(),
        death_ppid: ppid,
        status,
        age_ns: age_s * 1_000_000_000,
        dated: Dated::Exit,
        exe: None,
    }
}

#[test]
fn json_snapshot_has_the_documented_fields() {
    let zs = [
        z(11, 10, ExitStatus::Code(3), 5),
        z(
            12,
            10,
            ExitStatus::Signal {
                signal: 9,
                core_dumped: false,
            },
            2,
        ),
    ];
    let lines = snapshot_json(100.0, &zs, &ctx(), 0, 1.0);
    assert_eq!(lines.len(), 3);
    let a: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(a["pid"], 11);
    assert_eq!(a["ppid"], 10);
    assert_eq!(a["comm"], "child");
    assert_eq!(a["parent_comm"], "lazy");
    assert_eq!(a["exit_code"], 3);
    assert!(a.get("signal").is_none());
    assert_eq!(a["age_s"], 5.0);
    assert_eq!(a["parent_zombies"], 2);
    assert_eq!(a["lost_events"], 0);
    assert_eq!(
        (a["age_exact"].as_bool(), a["age_source"].as_str()),
        (Some(true), Some("exit"))
    );
    assert_eq!(a["parent"]["unit"], "nginx.service");
    assert_eq!(a["parent"]["pids_max"], serde_json::Value::Null);
    assert_eq!(a["parent"]["pids_current"], 7);
    let b: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(b["signal"], 9);
    assert!(b.get("exit_code").is_none());
    let s: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(
        (
            s["type"].as_str(),
            s["zombies"].as_u64(),
            s["parents"].as_u64()
        ),
        (Some("summary"), Some(2), Some(1))
    );
    assert_eq!(
        (s["pid_max"].as_u64(), s["tasks"].as_u64()),
        (Some(4_194_304), Some(300))
    );
}

#[test]
fn plain_snapshot_groups_by_parent() {
    let zs = [
        z(11, 10, ExitStatus::Code(3), 5),
        z(21, 20, ExitStatus::Code(0), 2),
    ];
    let text = snapshot_plain(&zs, &ctx(), 4, 1.0).join("\n");
    assert!(text.contains("parent 10 (lazy) holds 1 zombie\n"), "{text}");
    assert!(text.contains("parent 20 (lazy) holds 1 zombie\n"), "{text}");
    assert!(text.contains("exit 3"));
    assert!(
        text.contains("  state S, waiting in do_wait; command: /usr/sbin/nginx -g daemon off;\n  cgroup /system.slice/nginx.service, unit nginx.service; pids 7 of no limit\n"),
        "{text}"
    );
    assert!(
        text.ends_with("2 zombies older than 1s; lost events: 4; tasks 300 of pid_max 4194304"),
        "{text}"
    );
    assert_eq!(
        snapshot_plain(&[], &Context::default(), 0, 1.0),
        vec!["0 zombies older than 1s; lost events: 0".to_string()]
    );
}
