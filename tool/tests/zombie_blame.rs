//! Real BPF, real processes: the parent a zombie is blamed on is the one `ps` shows, also
//! after the kernel re-parented it (issue 16): under a child subreaper, and under the
//! init of a pid namespace that never waits. Checked in `zombies` (snapshot and
//! `--watch`), `top` and `serve`'s gauge, each started before the zombies exist.
mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::{
    Proclens, can_trace,
    exporter::{Server, sample_sum, scrape},
    lifecycle_workloads::orphan_pid_file,
    workload::Workload,
    zombies::{collect_until, comm_of, of_type, ps, ps_zombies_of, snapshot, watch},
};
use serde_json::Value;

workload_entry!();

/// The views, started before the zombies exist.
struct Views {
    watch: Proclens,
    top: Proclens,
    serve: Server,
}

impl Views {
    fn start() -> Self {
        let top = Proclens::spawn(&["top", "--json", "--interval", "0.5"]);
        top.json_until(Duration::from_secs(30), |v| v["type"] == "system");
        Self {
            watch: watch("0.5"),
            top,
            serve: Server::start(&[]),
        }
    }

    /// Every view blames exactly `zombies` (what `ps` shows) on `holder`: `--watch` told
    /// of the `fresh` ones (those not told of before) on it, and of `orphans` (zombies or
    /// alive) handed to it.
    fn agree(
        &self,
        holder: u32,
        zombies: &BTreeSet<u32>,
        fresh: &BTreeSet<u32>,
        orphans: &BTreeSet<u32>,
    ) {
        let comm = comm_of(holder);
        let n = zombies.len();
        // --watch: each zombie once, on the holder; each orphan handed to it.
        let lines = collect_until(&self.watch, Duration::from_secs(20), |s| {
            let z: BTreeSet<u32> = of_type(s, "zombie", holder)
                .iter()
                .map(|v| pid(v))
                .collect();
            let o: BTreeSet<u32> = s
                .iter()
                .filter(|v| v["type"] == "orphan" && v["new_ppid"] == holder)
                .map(pid)
                .collect();
            z.is_superset(fresh) && o.is_superset(orphans)
        });
        for z in lines
            .iter()
            .filter(|v| v["type"] == "zombie" && fresh.contains(&pid(v)))
        {
            assert_eq!(
                (z["ppid"].as_u64(), z["parent_comm"].as_str()),
                (Some(holder.into()), Some(comm.as_str())),
                "{z}"
            );
        }
        for o in lines
            .iter()
            .filter(|v| v["type"] == "orphan" && orphans.contains(&pid(v)))
        {
            assert_eq!(o["new_parent_comm"], comm.as_str(), "{o}");
        }
        // The snapshot: the same zombies, with the holder's context as /proc shows it.
        let (_, snap, _) = snapshot(&["--min-age", "0.2"]);
        let mine: Vec<&Value> = snap.iter().filter(|z| zombies.contains(&pid(z))).collect();
        assert_eq!(mine.len(), n, "{snap:?}");
        for z in &mine {
            assert_eq!(z["ppid"], holder, "{z}");
            assert_eq!(z["parent_zombies"], n as u64, "{z}");
            let parent = &z["parent"];
            let state = ps()[&holder].1.chars().next().unwrap().to_string();
            assert_eq!(parent["state"], state.as_str(), "{z}");
            // Where it sleeps, as /proc tells this (root, every capability) test: the
            // holder is root's too, which proclens may read only with CAP_SYS_PTRACE.
            // Before 5.16, x86 kernels built with the ORC unwinder (Debian's) show "0" as
            // every task's wchan ("x86: Fix get_wchan() to support the ORC unwinder").
            let wchan = std::fs::read_to_string(format!("/proc/{holder}/wchan")).unwrap();
            assert!(
                state == "S" && (wchan != "0" || !common::kernel_at_least(5, 16)),
                "the holder sleeps: {state} {wchan}"
            );
            // "0" says nothing: proclens shows it as null.
            let wchan = Some(wchan.trim()).filter(|w| *w != "0");
            assert_eq!(parent["wchan"].as_str(), wchan, "{z}");
            let cgroup = std::fs::read_to_string(format!("/proc/{holder}/cgroup")).unwrap();
            assert!(
                cgroup.contains(&format!("0::{}\n", parent["cgroup"].as_str().unwrap())),
                "{z}"
            );
            let exe = std::env::current_exe().unwrap();
            assert!(
                parent["cmdline"]
                    .as_str()
                    .unwrap()
                    .contains(exe.to_str().unwrap()),
                "{z}"
            );
        }
        // top: the holder's row counts them (zombies at least 1 s old).
        self.top.json_until(Duration::from_secs(20), |v| {
            v["type"] == "process" && v["pid"] == holder && v["zombies"] == n as u64
        });
        // serve's gauge, by the holder's command.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let body = scrape(self.serve.addr);
            let shown = sample_sum(&body, "proclens_zombies", &[("parent_comm", &comm)]);
            if shown == n as f64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "serve shows {shown} zombies of {comm}, ps {n}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn pid(v: &Value) -> u32 {
    v["pid"].as_u64().unwrap() as u32
}

/// Issue 16's case: a subreaper S forks P, P forks Z and L; Z exits, then P exits
/// without waiting. The kernel hands Z and L to S: S holds Z and P as zombies, and L
/// when it ends.
#[test]
fn issue_16_a_subreapers_inherited_zombies_are_blamed_on_it() {
    if !can_trace() {
        return;
    }
    let views = Views::start();
    let mut w = Workload::spawn("subreaper-zombies");
    let s = w.pid();
    w.go();
    let pids: Vec<u32> = std::fs::read_to_string(orphan_pid_file(s))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (p, z, l) = (pids[0], pids[1], pids[2]);
    let zombies = ps_zombies_of(s);
    assert_eq!(zombies, BTreeSet::from([p, z]), "ps: {:?}", ps());
    assert_eq!(ps()[&l].0, s, "ps: L belongs to S");
    views.agree(s, &zombies, &zombies, &BTreeSet::from([z, l]));
    // L ends: a third zombie of S.
    w.go();
    let zombies = ps_zombies_of(s);
    assert_eq!(zombies, BTreeSet::from([p, z, l]));
    views.agree(s, &zombies, &BTreeSet::from([l]), &BTreeSet::new());
}

/// Issue 16's container case: the init of a pid namespace (`unshare --pid --fork`) that
/// never waits holds its children's zombies and those of the orphans the kernel handed
/// it (its namespace's `child_reaper`, not the host's init or a subreaper outside).
#[test]
fn issue_16_a_pid_namespace_inits_zombies_are_blamed_on_it() {
    if !can_trace() {
        return;
    }
    const N: usize = 3;
    let views = Views::start();
    let mut w = Workload::spawn_under(
        &["unshare", "--pid", "--fork", "--kill-child"],
        &format!("ns-init-zombies:{N}"),
        &[],
    );
    let unshare = w.pid();
    let init = ps()
        .into_iter()
        .find(|(_, (pp, _))| *pp == unshare)
        .map(|(pid, _)| pid)
        .expect("unshare's child, the namespace's init");
    w.go();
    let zombies = ps_zombies_of(init);
    assert_eq!(zombies.len(), N + 2, "ps: {:?}", ps());
    // The grandchild G: the one zombie of the init it did not fork itself, so the one
    // the orphan line names (its parent M is a zombie too).
    let lines = collect_until(&views.watch, Duration::from_secs(20), |s| {
        s.iter()
            .any(|v| v["type"] == "orphan" && v["new_ppid"] == init)
    });
    let g: BTreeSet<u32> = lines
        .iter()
        .filter(|v| v["type"] == "orphan" && v["new_ppid"] == init)
        .map(pid)
        .collect();
    assert_eq!(g.len(), 1, "{lines:?}");
    assert!(g.is_subset(&zombies));
    views.agree(init, &zombies, &zombies, &BTreeSet::new());
}
