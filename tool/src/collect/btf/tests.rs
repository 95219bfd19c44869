use std::sync::OnceLock;

use proptest::{prelude::*, sample::Index};

use super::*;
use crate::collect::copies::FdOffsets;

/// Minimal BTF writer for hand-made type graphs (little-endian, base BTF).
struct BtfWriter {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;

impl BtfWriter {
    fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn name(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Starts a type record; returns its id.
    fn ty(&mut self, name: &str, kind: u32, vlen: usize, size_or_type: u32) -> u32 {
        let name = self.name(name);
        self.words(&[name, (kind << 24) | vlen as u32, size_or_type]);
        self.next_id += 1;
        self.next_id - 1
    }

    fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.ty(name, KIND_INT, 0, size);
        self.words(&[size * 8]);
        id
    }

    /// A struct or union; members are (name, type id, bit offset), "" for anonymous.
    fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let id = self.ty(name, kind, members.len(), size);
        for &(m, ty, bits) in members {
            let m = self.name(m);
            self.words(&[m, ty, bits]);
        }
        id
    }

    fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
        let id = self.ty("", KIND_FUNC_PROTO, params.len(), ret);
        for &p in params {
            self.words(&[0, p]);
        }
        id
    }

    fn finish(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9fu16.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        let tl = self.types.len() as u32;
        for w in [24, 0, tl, tl, self.strings.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&self.types);
        b.extend_from_slice(&self.strings);
        b
    }
}

/// A member of the generated `task_struct`: a named int, or an anonymous struct or
/// union of named ints.
#[derive(Debug, Clone)]
enum GenMember {
    Named(u32),
    Anon {
        union: bool,
        bits: u32,
        inner: Vec<u32>,
    },
}

/// Bit offsets: mostly whole bytes, some bitfields; below 2^31 so sums never overflow.
fn bits() -> impl Strategy<Value = u32> {
    prop_oneof![3 => (0u32..1 << 28).prop_map(|b| b * 8), 1 => 0u32..1 << 31]
}

fn gen_member() -> impl Strategy<Value = GenMember> {
    prop_oneof![
        3 => bits().prop_map(GenMember::Named),
        1 => (any::<bool>(), bits(), prop::collection::vec(bits(), 0..4))
            .prop_map(|(union, bits, inner)| GenMember::Anon { union, bits, inner }),
    ]
}

/// The lookups proclens makes on a kernel's BTF, each as `Ok(Debug text)` or `Err`.
fn lookups(btf: &Btf) -> Lookups {
    fn text<T: std::fmt::Debug>(r: Result<T>) -> Result<String, String> {
        r.map(|v| format!("{v:?}")).map_err(|e| format!("{e:#}"))
    }
    vec![
        text(TaskOffsets::from_btf(btf)),
        text(LifecycleOffsets::from_btf(btf)),
        text(CgroupWalkOffsets::from_btf(btf)),
        text(RqClockOffsets::from_btf(btf)),
        text(SchedInfoOffsets::from_btf(btf)),
        text(FdOffsets::from_btf(btf)),
        text(raw_tp_args(btf, "sched_switch")),
        text(raw_tp_args(btf, "sched_wakeup")),
        text(tracepoint_args(btf, "sched_process_fork")),
        text(struct_size(btf, "task_struct")),
    ]
}

/// The results of [`lookups`].
type Lookups = Vec<Result<String, String>>;

/// The host's BTF: its bytes, the lookups' results on them and the byte ranges of
/// the records the lookups read.
struct HostBtf {
    bytes: Vec<u8>,
    base: Lookups,
    records: Vec<std::ops::Range<usize>>,
}

/// The host's BTF, read and parsed once (a parse of its 5 MB takes a few 100 ms).
fn host_btf() -> Option<&'static HostBtf> {
    static HOST: OnceLock<Option<HostBtf>> = OnceLock::new();
    HOST.get_or_init(|| {
        let bytes = std::fs::read(VMLINUX).ok()?;
        let btf = parse(&bytes).unwrap();
        Some(HostBtf {
            base: lookups(&btf),
            records: looked_up_records(&bytes, &btf),
            bytes,
        })
    })
    .as_ref()
}

/// Byte ranges of the type records proclens's lookups read in `bytes` (the structs,
/// the tracepoint typedefs and the pointer and prototype they lead to).
fn looked_up_records(bytes: &[u8], btf: &Btf) -> Vec<std::ops::Range<usize>> {
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let (hdr, type_off, type_len) = (word(4) as usize, word(8) as usize, word(12) as usize);
    // Record start of every type id (id 1 is the first record).
    let mut starts = vec![0];
    let mut at = hdr + type_off;
    while at < hdr + type_off + type_len {
        starts.push(at);
        let info = word(at + 4);
        at += names::record_len((info >> 24) & 0x1f, (info & 0xffff) as usize).unwrap();
    }
    let mut ids = Vec::new();
    for name in [
        "task_struct",
        "sighand_struct",
        "k_sigaction",
        "sigaction",
        "pid",
        "upid",
        "signal_struct",
        "linux_binprm",
        "css_set",
        "cgroup",
        "sched_entity",
        "cfs_rq",
        "rq",
        "sched_info",
        "files_struct",
        "fdtable",
        "file",
        "inode",
    ] {
        ids.extend(btf.resolve_ids_by_name(name).unwrap_or_default());
    }
    for tp in [
        "sched_switch",
        "sched_wakeup",
        "sched_process_fork",
        "sched_process_exit",
    ] {
        for id in btf
            .resolve_ids_by_name(&format!("btf_trace_{tp}"))
            .unwrap_or_default()
        {
            ids.push(id);
            let mut ty = btf.resolve_type_by_id(id).ok();
            for _ in 0..2 {
                let next = ty
                    .as_ref()
                    .and_then(|t| t.as_btf_type())
                    .and_then(btf_rs::BtfType::get_type_id);
                ids.extend(next);
                ty = next.and_then(|n| btf.resolve_type_by_id(n).ok());
            }
        }
    }
    ids.iter()
        .filter_map(|&id| {
            let start = *starts.get(id as usize)?;
            let end = starts
                .get(id as usize + 1)
                .copied()
                .unwrap_or(hdr + type_off + type_len);
            Some(start..end)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Offsets of a generated struct (named members, anonymous struct and union
    /// members, bitfields, a member-less forward declaration of the same name) are
    /// found where they were put; bitfields and absent members are errors.
    #[test]
    fn proptest_member_offsets_round_trip(
        members in prop::collection::vec(gen_member(), 0..12),
        size in any::<u32>(),
    ) {
        let mut w = BtfWriter::new();
        let int = w.int("int", 4);
        w.aggregate(KIND_STRUCT, "task_struct", 0, &[]);
        let mut want = Vec::new();
        let mut outer = Vec::new();
        let names: Vec<String> = (0..64).map(|i| format!("m{i}")).collect();
        for m in &members {
            match m {
                GenMember::Named(bits) => {
                    outer.push((names[want.len()].as_str(), int, *bits));
                    want.push((names[want.len()].clone(), *bits));
                }
                GenMember::Anon { union, bits, inner } => {
                    let mut fields = Vec::new();
                    for b in inner {
                        fields.push((names[want.len()].as_str(), int, *b));
                        want.push((names[want.len()].clone(), bits + b));
                    }
                    let kind = if *union { KIND_UNION } else { KIND_STRUCT };
                    let id = w.aggregate(kind, "", 0, &fields);
                    outer.push(("", id, *bits));
                }
            }
        }
        w.aggregate(KIND_STRUCT, "task_struct", size, &outer);
        let btf = parse(&w.finish()).unwrap();
        for (name, bits) in &want {
            let got = member_offset(&btf, "task_struct", name);
            if bits % 8 == 0 {
                prop_assert_eq!(got.ok(), Some(bits / 8), "{}", name);
            } else {
                prop_assert!(got.is_err(), "bitfield {name} at bit {bits}");
            }
        }
        prop_assert!(member_offset(&btf, "task_struct", "absent").is_err());
        if outer.is_empty() {
            prop_assert!(struct_size(&btf, "task_struct").is_err(), "no struct with members");
        } else {
            prop_assert_eq!(struct_size(&btf, "task_struct").ok(), Some(size));
        }
    }
}

/// A small BTF with every struct member and tracepoint proclens looks up, laid out
/// like a kernel's (members 8 bytes apart; tracepoint typedefs to function pointers).
fn kernel_like_btf() -> Vec<u8> {
    const STRUCTS: [(&str, &[&str]); 18] = [
        (
            "task_struct",
            &[
                "pid",
                "tgid",
                "mm",
                "group_leader",
                "start_time",
                "__state",
                "exit_state",
                "real_parent",
                "start_boottime",
                "exit_code",
                "exit_signal",
                "sighand",
                "comm",
                "signal",
                "cgroups",
                "files",
                "se",
                "sched_info",
                "active_mm",
                "nvcsw",
                "nivcsw",
                "on_cpu",
                "on_rq",
                "flags",
            ],
        ),
        ("sched_entity", &["cfs_rq"]),
        ("cfs_rq", &["rq"]),
        ("rq", &["clock"]),
        (
            "sched_info",
            &["pcount", "run_delay", "last_arrival", "last_queued"],
        ),
        ("sighand_struct", &["count", "action"]),
        ("k_sigaction", &["sa"]),
        ("sigaction", &["sa_handler", "sa_flags"]),
        ("linux_binprm", &["filename"]),
        ("pid", &["count", "numbers"]),
        ("upid", &["nr"]),
        ("signal_struct", &["live"]),
        ("css_set", &["dfl_cgrp"]),
        ("cgroup", &["level", "ancestor_ids"]),
        ("files_struct", &["fdt"]),
        ("fdtable", &["max_fds", "fd"]),
        ("file", &["f_inode", "f_mode"]),
        ("inode", &["i_mode"]),
    ];
    let mut w = BtfWriter::new();
    let int = w.int("int", 4);
    let boolean = w.int("bool", 1);
    let uint = w.int("unsigned int", 4);
    let mut task = 0;
    for (name, members) in STRUCTS {
        let m: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (*m, int, 64 * i as u32))
            .collect();
        let id = w.aggregate(KIND_STRUCT, name, 8 * m.len() as u32, &m);
        if name == "task_struct" {
            task = id;
        }
    }
    let task_ptr = w.ty("", KIND_PTR, 0, task);
    let tps: [(&str, &[u32]); 4] = [
        (
            "sched_switch",
            &[task_ptr, boolean, task_ptr, task_ptr, uint],
        ),
        ("sched_wakeup", &[task_ptr, task_ptr]),
        ("sched_process_fork", &[task_ptr, task_ptr, task_ptr]),
        ("sched_process_exit", &[task_ptr, task_ptr, boolean]),
    ];
    for (tp, params) in tps {
        let ptr = w.next_id + 1;
        w.ty(&format!("btf_trace_{tp}"), KIND_TYPEDEF, 0, ptr);
        w.ty("", KIND_PTR, 0, ptr + 1);
        w.func_proto(0, params);
    }
    w.finish()
}

#[test]
fn kernel_like_btf_answers_every_lookup() {
    let btf = parse(&kernel_like_btf()).unwrap();
    let l = LifecycleOffsets::from_btf(&btf).unwrap();
    assert_eq!((l.pid, l.tgid, l.comm), (0, 8, 96));
    // action at 8, 16 k_sigaction of 8 bytes before SIGCHLD's, sa at 0, sa_flags at 8.
    assert_eq!(
        (l.sigchld_handler, l.sigchld_flags),
        (8 + 16 * 8, 8 + 16 * 8 + 8)
    );
    assert!(
        lookups(&btf).iter().all(Result::is_ok),
        "{:?}",
        lookups(&btf)
    );
    // se (member 16) and sched_info (17) embed their structs.
    let rq = RqClockOffsets::from_btf(&btf).unwrap();
    assert_eq!((rq.task_cfs_rq, rq.cfs_rq_rq, rq.rq_clock), (128, 0, 0));
    let si = SchedInfoOffsets::from_btf(&btf).unwrap();
    assert_eq!(
        (si.run_delay, si.last_arrival, si.last_queued),
        (136 + 8, 136 + 16, 136 + 24)
    );
    // The older cgroup layout: ancestors' ids in an array.
    let walk = CgroupWalkOffsets::from_btf(&btf).unwrap();
    assert_eq!((walk.cgroup_ancestor_ids, walk.ancestor_ptrs), (8, None));
    assert_eq!(
        raw_tp_args(&btf, "sched_switch").unwrap(),
        [
            "bool",
            "struct task_struct *",
            "struct task_struct *",
            "unsigned int"
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A small kernel-like BTF with bytes overwritten or cut anywhere: parsing and every
    /// lookup return Ok or Err, never panic or loop; a write of the bytes already there
    /// changes no result.
    #[test]
    fn proptest_mutated_kernel_like_btf_never_panics(
        at in any::<Index>(),
        patch in prop::collection::vec(any::<u8>(), 1..5),
        cut in prop::option::weighted(0.1, any::<Index>()),
    ) {
        let bytes = kernel_like_btf();
        let base = lookups(&parse(&bytes).unwrap());
        let mut m = bytes.clone();
        let start = at.index(m.len());
        let end = (start + patch.len()).min(m.len());
        m[start..end].copy_from_slice(&patch[..end - start]);
        if let Some(cut) = cut {
            m.truncate(cut.index(m.len()));
        }
        match parse(&m) {
            Ok(btf) => {
                let got = lookups(&btf);
                if m == bytes {
                    prop_assert_eq!(&got, &base);
                }
                for r in got {
                    prop_assert!(r.is_ok() || !r.unwrap_err().is_empty());
                }
            }
            Err(e) => prop_assert!(m != bytes, "rejected unchanged: {e:#}"),
        }
    }
}

proptest! {
    // Each case parses the host's 5 MB of BTF (~0.3 s): a few cases, not hundreds; the
    // kernel-like BTF above takes the many cases.
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The host's BTF cut short is rejected.
    #[test]
    fn proptest_truncated_host_btf_is_an_error(cut in any::<Index>()) {
        let Some(HostBtf { bytes, .. }) = host_btf() else {
            return Ok(());
        };
        let cut = cut.index(bytes.len());
        prop_assert!(parse(&bytes[..cut]).is_err(), "accepted {cut} of {} bytes", bytes.len());
    }

    /// The host's BTF with header fields or bytes of the records proclens reads
    /// overwritten: parsing and every lookup return Ok or Err, never panic or loop; a
    /// write of the bytes already there changes no result.
    #[test]
    fn proptest_mutated_host_btf_never_panics(
        header_field in prop::option::weighted(0.3, 0usize..6),
        record in any::<Index>(),
        at in any::<Index>(),
        patch in prop::collection::vec(any::<u8>(), 1..5),
        identity in prop::bool::weighted(0.1),
    ) {
        let Some(HostBtf { bytes, base, records }) = host_btf() else {
            return Ok(());
        };
        let mut m = bytes.clone();
        let range = match header_field {
            // magic+version+flags, or one of the five u32 lengths and offsets.
            Some(0) => 0..4,
            Some(f) => 4 * f..4 * f + 4,
            None => records[record.index(records.len())].clone(),
        };
        let start = range.start + at.index(range.len());
        let end = (start + patch.len()).min(range.end);
        if identity {
            // Nothing changes: the lookups must give what they give on the host.
        } else {
            m[start..end].copy_from_slice(&patch[..end - start]);
        }
        match parse(&m) {
            Ok(btf) => {
                let got = lookups(&btf);
                if m == *bytes {
                    prop_assert_eq!(&got, base);
                }
                for r in got {
                    prop_assert!(r.is_ok() || !r.unwrap_err().is_empty());
                }
            }
            Err(e) => prop_assert!(m != *bytes, "the host's BTF was rejected: {e:#}"),
        }
    }
}

/// Malformed BTF whose references loop (an anonymous member of its own struct, a
/// pointer to itself) or whose offsets overflow: errors, not a stack overflow or a
/// wrapped offset. Regression tests for issue 7.
#[test]
fn looping_or_overflowing_btf_is_an_error() {
    let mut w = BtfWriter::new();
    let int = w.int("int", 4);
    // task_struct { int pid; <anonymous member of type task_struct itself> }.
    let me = w.next_id;
    w.aggregate(
        KIND_STRUCT,
        "task_struct",
        8,
        &[("pid", int, 0), ("", me, 32)],
    );
    // btf_trace_sched_switch -> ptr -> proto(int, ptr to itself).
    let (td, ptr, proto, self_ptr) = (w.next_id, w.next_id + 1, w.next_id + 2, w.next_id + 3);
    assert_eq!(w.ty("btf_trace_sched_switch", KIND_TYPEDEF, 0, ptr), td);
    w.ty("", KIND_PTR, 0, proto);
    w.func_proto(int, &[int, self_ptr]);
    assert_eq!(w.ty("", KIND_PTR, 0, self_ptr), self_ptr);
    // sighand_struct.action + 16 * sizeof(k_sigaction) overflows.
    w.aggregate(KIND_STRUCT, "sighand_struct", 8, &[("action", int, 64)]);
    w.aggregate(KIND_STRUCT, "k_sigaction", 0x1000_0000, &[("sa", int, 0)]);
    // A member past 2^32 bits in all: 0xffff_fff8 + 16 inside an anonymous struct.
    let inner = w.aggregate(KIND_STRUCT, "", 4, &[("far", int, 16)]);
    w.aggregate(KIND_STRUCT, "signal_struct", 4, &[("", inner, 0xffff_fff8)]);
    let btf = parse(&w.finish()).unwrap();

    assert_eq!(member_offset(&btf, "task_struct", "pid").unwrap(), 0);
    let err = member_offset(&btf, "task_struct", "mm").unwrap_err();
    assert!(format!("{err:#}").contains("deeper"), "{err:#}");
    let err = raw_tp_args(&btf, "sched_switch").unwrap_err();
    assert!(format!("{err:#}").contains("deeper"), "{err:#}");
    assert!(member_offset(&btf, "signal_struct", "far").is_err());
    let mut w2 = BtfWriter::new();
    let int = w2.int("int", 4);
    w2.aggregate(KIND_STRUCT, "task_struct", 8, &[("start_boottime", int, 0)]);
    w2.aggregate(KIND_STRUCT, "sighand_struct", 8, &[("action", int, 64)]);
    w2.aggregate(KIND_STRUCT, "k_sigaction", 0x1000_0000, &[("sa", int, 0)]);
    let err = LifecycleOffsets::from_btf(&parse(&w2.finish()).unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("k_sigaction"), "{err:#}");
}

#[test]
fn garbage_is_not_btf() {
    for bad in [
        &b""[..],
        b"\x9f\xeb",
        &[0u8; 64],
        b"\x9f\xeb\x01\x00\x18\x00\x00\x00",
    ] {
        assert!(parse(bad).is_err());
    }
}

/// This host's kernel BTF; `None` (the test skipped, saying why) only where the host
/// has no BTF at all.
fn host_vmlinux() -> Option<Btf> {
    if !Path::new(VMLINUX).exists() {
        eprintln!("skipped: {VMLINUX} missing on this host");
        return None;
    }
    Some(load_vmlinux().unwrap())
}

/// Resolves the offsets from this host's kernel; skipped (with a reason) only where the
/// host has no BTF at all.
#[test]
fn task_offsets_from_host_btf() {
    let Some(btf) = host_vmlinux() else {
        return;
    };
    let off = TaskOffsets::from_btf(&btf).unwrap();
    // Plausibility, not a hard-coded layout: distinct, 8-byte aligned pointers/u64s
    // well inside a task_struct (a few KiB).
    for o in [off.mm, off.group_leader, off.start_time] {
        assert!(o > 0 && o < 16 * 1024 && o % 8 == 0, "{off:?}");
    }
    assert!(
        off.pid.is_multiple_of(4) && off.exit_state.is_multiple_of(4) && off.pid < 16 * 1024,
        "{off:?}"
    );
    assert_ne!(off.mm, off.group_leader);
    // The switch counters are adjacent longs; the borrowed mm follows mm.
    assert_eq!(off.nivcsw, off.nvcsw + 8, "{off:?}");
    assert_eq!(off.active_mm, off.mm + 8, "{off:?}");
    assert!(
        off.on_cpu.is_multiple_of(4) && off.on_rq.is_multiple_of(4),
        "{off:?}"
    );
    // `flags` is the task's own (an early member), not a nested struct's.
    assert!(off.flags < off.on_cpu, "{off:?}");
    // This host's cgroups: one of the two ancestor layouts resolves.
    CgroupWalkOffsets::from_btf(&btf).unwrap();
    assert!(member_offset(&btf, "task_struct", "no_such_member_xyz").is_err());
    assert!(member_offset(&btf, "no_such_struct_xyz", "mm").is_err());
}

/// The scheduler's clock is reachable on this host (a distribution kernel with
/// `CONFIG_FAIR_GROUP_SCHED`): the switch programs then need no clock helper.
#[test]
fn run_queue_clock_offsets_from_host_btf() {
    let Some(btf) = host_vmlinux() else {
        return;
    };
    let off = RqClockOffsets::from_btf(&btf).unwrap();
    let se = member_offset(&btf, "task_struct", "se").unwrap();
    assert!(
        off.task_cfs_rq > se && off.task_cfs_rq < 16 * 1024,
        "{off:?}"
    );
    for o in [off.task_cfs_rq, off.cfs_rq_rq, off.rq_clock] {
        assert!(o.is_multiple_of(8), "{off:?}");
    }
    let si = SchedInfoOffsets::from_btf(&btf).unwrap();
    for o in [si.run_delay, si.last_arrival, si.last_queued] {
        assert!(o.is_multiple_of(8) && o < 16 * 1024, "{si:?}");
    }
}

#[test]
fn raw_tracepoint_arguments_from_host_btf() {
    let Some(btf) = host_vmlinux() else {
        return;
    };
    let switch = raw_tp_args(&btf, "sched_switch").unwrap();
    // 5.18+ appends `unsigned int prev_state`; older kernels stop after `next`.
    assert_eq!(
        &switch[..3],
        ["bool", "struct task_struct *", "struct task_struct *"]
    );
    assert!(
        switch.len() == 3 || switch[3] == "unsigned int",
        "{switch:?}"
    );
    assert_eq!(
        raw_tp_args(&btf, "sched_wakeup").unwrap(),
        ["struct task_struct *"]
    );
    assert!(raw_tp_args(&btf, "no_such_tracepoint_xyz").is_err());
}

#[test]
fn lifecycle_offsets_from_host_btf() {
    let Some(btf) = host_vmlinux() else {
        return;
    };
    let off = LifecycleOffsets::from_btf(&btf).unwrap();
    // pid and tgid are adjacent pid_t fields; comm is 16 bytes inside the task.
    assert_eq!(off.tgid, off.pid + 4, "{off:?}");
    assert!(off.comm > 0 && off.comm < 16 * 1024);
    // The SIGCHLD slot is the 17th k_sigaction, handler first and flags after it.
    let k = struct_size(&btf, "k_sigaction").unwrap();
    assert!(k >= 16, "k_sigaction of {k} bytes");
    assert_eq!(
        off.sigchld_handler,
        member_offset(&btf, "sighand_struct", "action").unwrap() + 16 * k
    );
    assert!(off.sigchld_flags > off.sigchld_handler);
    assert!(struct_size(&btf, "no_such_struct_xyz").is_err());
    // fork passes (parent, child); exec (task, old_pid, bprm); free (task).
    assert_eq!(tracepoint_args(&btf, "sched_process_fork").unwrap(), 2);
    assert_eq!(tracepoint_args(&btf, "sched_process_exec").unwrap(), 3);
    assert_eq!(tracepoint_args(&btf, "sched_process_free").unwrap(), 1);
    assert!(tracepoint_args(&btf, "no_such_tracepoint_xyz").is_err());
}

#[test]
fn family_offsets_from_host_btf() {
    let Some(btf) = host_vmlinux() else {
        return;
    };
    let f = FamilyOffsets::from_btf(&btf).unwrap();
    // `children` and `sibling` are adjacent list heads of the task.
    assert_eq!(f.sibling, f.children + 16, "{f:?}");
    // struct upid { int nr; struct pid_namespace *ns; }.
    assert_eq!((f.upid_size, f.upid_ns), (16, 8), "{f:?}");
    // The two subreaper flags are adjacent one-bit fields.
    assert_eq!(f.has_subreaper_bit, f.is_subreaper_bit + 1, "{f:?}");
    assert!(f.wait_chldexit > 0 && f.pid_numbers > f.pid_level, "{f:?}");
    assert!(f.last_arrival.is_some(), "{f:?}");
    assert_eq!(
        member_bit_offset(&btf, "task_struct", "pid").unwrap() % 8,
        0
    );
}
