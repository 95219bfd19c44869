//! What a running proclens holds in its kernel maps, read with bpftool (an oracle outside
//! proclens): the filters' proof is that other processes never get an entry.

use std::{fs, process::Command};

use serde_json::Value;

/// The ids of the BPF objects of a kind (`map_id`, `prog_id`) process `pid` holds fds of.
fn ids_of(pid: u32, kind: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("proclens runs")
        .flatten()
    {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix(kind)?.strip_prefix(':'))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// bpftool's JSON description of an object (`map` or `prog`) by id.
fn show(what: &str, id: u64) -> Value {
    let out = Command::new("bpftool")
        .args(["-j", what, "show", "id", &id.to_string()])
        .output()
        .expect("bpftool is installed (cargo xtask setup)");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The ids of the BPF maps process `pid` holds fds of, by map name.
fn maps_of(pid: u32, name: &str) -> Vec<u64> {
    ids_of(pid, "map_id")
        .into_iter()
        .filter(|&id| show("map", id)["name"] == name)
        .collect()
}

/// The names of the BPF programs process `pid` holds (loaded, or attached through a
/// link).
pub fn program_names(pid: u32) -> Vec<String> {
    ids_of(pid, "prog_id")
        .into_iter()
        .filter_map(|id| show("prog", id)["name"].as_str().map(str::to_string))
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
                .map(|x| {
                    u8::from_str_radix(x.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect();
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
        .collect()
}
