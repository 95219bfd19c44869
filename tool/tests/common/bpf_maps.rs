//! What a running proclens holds in its kernel maps, read with bpftool (an oracle outside
//! proclens): the filters' proof is that other processes never get an entry.

use std::{fs, process::Command};

use serde_json::Value;

/// The ids of the BPF maps process `pid` holds fds of, by map name.
fn maps_of(pid: u32, name: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("proclens runs").flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("map_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .filter(|id| {
            let out = Command::new("bpftool")
                .args(["-j", "map", "show", "id", &id.to_string()])
                .output()
                .expect("bpftool is installed (cargo xtask setup)");
            serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v["name"] == name)
        })
        .collect()
}

/// The first four bytes of every key of map `name` of process `pid`, read as the
/// little-endian u32 the proclens keys start with (the tgid).
pub fn key_tgids(pid: u32, name: &str) -> Vec<u32> {
    let ids = maps_of(pid, name);
    assert_eq!(ids.len(), 1, "proclens {pid} holds one map {name}: {ids:?}");
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &ids[0].to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool map dump: {out:?}");
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    entries
        .iter()
        .map(|e| {
            let b: Vec<u8> = e["key"].as_array().unwrap()[..4]
                .iter()
                .map(|x| u8::from_str_radix(x.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
                .collect();
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
        .collect()
}
