//! Where the kernel's named types are, found in one pass over its BTF. btf-rs's mapped
//! backend scans all ~150,000 types (6.18) for every name looked up; the layouts look up
//! a few dozen names, which cost ~50 ms of CPU at every start.

use std::collections::HashMap;

/// The kinds indexed: those the layouts look up by name.
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const ENUM64: u32 = 19;

/// BTF's magic number, as a little-endian file starts with it.
const MAGIC: u16 = 0xeb9f;

/// The length of a type record of `kind` with `vlen` members, parameters or values (the
/// kernel's Documentation/bpf/btf.rst); `None` for a kind newer than this code.
pub fn record_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(
        12 + match kind {
            1 | 14 | 17 => 4,             // int, var, decl_tag
            3 => 12,                      // array
            4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
            6 | 13 => 8 * vlen,           // enum, func_proto
            // ptr, fwd, typedef, qualifiers, func, float, type_tag
            2 | 7..=12 | 16 | 18 => 0,
            _ => return None,
        },
    )
}

/// Whether `t` is of a kind [`index`] keeps (what a lookup by name returns either way).
pub fn indexed_kind(t: &btf_rs::Type) -> bool {
    use btf_rs::Type;
    matches!(
        t,
        Type::Struct(_) | Type::Union(_) | Type::Enum(_) | Type::Enum64(_) | Type::Typedef(_)
    )
}

/// The ids of every named struct, union, enum and typedef of `bytes` (a whole BTF file,
/// not a split one), by name; `None` for a layout it does not know (another byte order,
/// a kind newer than this code), where lookups scan instead.
pub fn index(bytes: &[u8]) -> Option<HashMap<String, Vec<u32>>> {
    let word = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    if u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?) != MAGIC {
        return None;
    }
    let hdr = word(4)? as usize;
    let (type_off, type_len) = (word(8)? as usize, word(12)? as usize);
    let (str_off, str_len) = (word(16)? as usize, word(20)? as usize);
    let strings = bytes.get(hdr + str_off..hdr + str_off + str_len)?;
    let types_end = hdr + type_off + type_len;
    let mut names: HashMap<String, Vec<u32>> = HashMap::new();
    let mut at = hdr + type_off;
    let mut id = 1u32;
    while at < types_end {
        let (name_off, info) = (word(at)? as usize, word(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if matches!(kind, STRUCT | UNION | ENUM | TYPEDEF | ENUM64) && name_off != 0 {
            let name = strings.get(name_off..)?;
            let name = &name[..name.iter().position(|&b| b == 0)?];
            names
                .entry(std::str::from_utf8(name).ok()?.to_owned())
                .or_default()
                .push(id);
        }
        at += record_len(kind, vlen)?;
        id += 1;
    }
    (at == types_end).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index finds what btf-rs's scan finds, for every kind it keeps, on this host's
    /// BTF; skipped with a reason where the host has none.
    #[test]
    fn the_index_agrees_with_a_scan() {
        let Ok(bytes) = std::fs::read(crate::collect::btf::VMLINUX) else {
            eprintln!("skipped: no BTF on this host");
            return;
        };
        let index = index(&bytes).expect("the host's BTF is indexed");
        let btf = btf_rs::Btf::from_bytes(&bytes).unwrap();
        for name in [
            "task_struct",
            "btf_trace_sched_switch",
            "x86_pf_error_code",
            "pid_type",
            "rq",
            "clone_args",
            "bpf_iter__task_file",
            "no_such_type_here",
        ] {
            let scanned: Vec<u32> = btf
                .resolve_ids_by_name(name)
                .unwrap_or_default()
                .into_iter()
                .filter(|&id| btf.resolve_type_by_id(id).is_ok_and(|t| indexed_kind(&t)))
                .collect();
            assert_eq!(
                index.get(name).cloned().unwrap_or_default(),
                scanned,
                "{name}"
            );
        }
        assert!(
            index["task_struct"].len() == 1 && index.len() > 1000,
            "{}",
            index.len()
        );
    }

    #[test]
    fn other_layouts_are_left_to_the_scan() {
        assert!(index(&[]).is_none());
        assert!(index(&[0x9f, 0xeb, 1, 0]).is_none(), "truncated header");
        assert!(
            index(&[0xeb, 0x9f, 1, 0, 24, 0, 0, 0]).is_none(),
            "big-endian"
        );
    }
}
