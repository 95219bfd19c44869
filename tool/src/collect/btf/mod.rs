//! Kernel struct layouts from the running kernel's BTF (/sys/kernel/btf/vmlinux), so no
//! offset is compiled in for one kernel.

use std::{collections::HashMap, ops::Deref, path::Path, sync::Mutex};

use anyhow::{Context as _, Result, bail};
use btf_rs::Type;

use crate::error::Fatal;

mod lifecycle;
mod names;
mod task;

pub use lifecycle::{FamilyOffsets, LifecycleOffsets};
pub use task::{CgroupWalkOffsets, RqClockOffsets, SchedInfoOffsets, TaskOffsets};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF, with an index of its named types (see `names`) where the file can be
/// mapped. Elsewhere (before 6.16) btf-rs reads it whole and indexes it itself; each
/// name's lookup is then kept too.
pub struct Btf {
    inner: btf_rs::Btf,
    index: Option<HashMap<String, Vec<u32>>>,
    ids: Mutex<HashMap<String, Vec<u32>>>,
}

impl Btf {
    fn new(inner: btf_rs::Btf, index: Option<HashMap<String, Vec<u32>>>) -> Self {
        Self {
            inner,
            index,
            ids: Mutex::new(HashMap::new()),
        }
    }

    /// The structs, unions, enums and typedefs named `name`.
    pub fn types_named(&self, name: &str) -> btf_rs::Result<Vec<Type>> {
        let ids = if let Some(index) = &self.index {
            index.get(name).cloned().unwrap_or_default()
        } else {
            let mut known = self
                .ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(ids) = known.get(name) {
                ids.clone()
            } else {
                let ids = self.inner.resolve_ids_by_name(name)?;
                known.insert(name.to_owned(), ids.clone());
                ids
            }
        };
        let mut types = Vec::new();
        for id in ids {
            let t = self.inner.resolve_type_by_id(id)?;
            if names::indexed_kind(&t) {
                types.push(t);
            }
        }
        Ok(types)
    }
}

impl Deref for Btf {
    type Target = btf_rs::Btf;

    fn deref(&self) -> &btf_rs::Btf {
        &self.inner
    }
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf").finish_non_exhaustive()
    }
}

pub fn load_vmlinux() -> Result<Btf> {
    if !Path::new(VMLINUX).exists() {
        return Err(Fatal::KernelUnsupported(format!(
            "the kernel has no BTF ({VMLINUX} is missing; it needs CONFIG_DEBUG_INFO_BTF=y)"
        ))
        .into());
    }
    // Mapped, not parsed whole: proclens looks up a few dozen types, and parsing all of
    // the kernel's (and freeing them) cost ~100 ms of CPU at every start. sysfs offers
    // mmap of this file only since Linux 6.16 (ENODEV before): there it is read whole.
    let index = std::fs::File::open(VMLINUX)
        .and_then(|f| {
            // SAFETY: a read-only map of a sysfs file the kernel never changes while up.
            unsafe { memmap2::Mmap::map(&f) }
        })
        .ok()
        .and_then(|m| names::index(&m));
    let mapped = index.is_some();
    guarded(
        || btf_rs::Btf::from_file_with_backend(VMLINUX, btf_rs::Backend::Mmap),
        index,
    )
    .or_else(|_| {
        guarded(
            || btf_rs::Btf::from_file_with_backend(VMLINUX, btf_rs::Backend::Cache),
            None,
        )
    })
    .with_context(|| format!("reading {VMLINUX} (mapped: {mapped})"))
}

/// Parses BTF bytes. Malformed input is an error: a panic inside `btf_rs` (a bug there, or
/// input it does not expect) is caught and reported as one too.
#[cfg(test)]
pub fn parse(bytes: &[u8]) -> Result<Btf> {
    guarded(|| btf_rs::Btf::from_bytes(bytes), names::index(bytes))
}

/// Runs a btf-rs parse, a panic on malformed input turned into an error.
fn guarded(
    parse: impl FnOnce() -> btf_rs::Result<btf_rs::Btf> + std::panic::UnwindSafe,
    index: Option<HashMap<String, Vec<u32>>>,
) -> Result<Btf> {
    match std::panic::catch_unwind(parse) {
        Ok(btf) => Ok(Btf::new(btf?, index)),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            bail!("malformed BTF (the parser panicked: {why})")
        }
    }
}

/// How deep lookups follow type references (anonymous members, pointers, qualifiers):
/// far more than any kernel nests, and a bound on malformed BTF whose references loop.
const MAX_DEPTH: u32 = 32;

/// The arguments a raw tracepoint passes (its `TP_PROTO`), as C type names, from the
/// `btf_trace_<name>` typedef the kernel defines for every tracepoint (the leading
/// `void *__data` is left out). Raw tracepoint programs read them by index.
pub fn raw_tp_args(btf: &Btf, tracepoint: &str) -> Result<Vec<String>> {
    let typedef = format!("btf_trace_{tracepoint}");
    let ty = btf
        .types_named(&typedef)
        .map_err(|_| {
            Fatal::KernelUnsupported(format!(
                "the kernel has no tracepoint {tracepoint} (no BTF type {typedef})"
            ))
        })?
        .into_iter()
        .next()
        .with_context(|| format!("BTF has no {typedef}"))?;
    let Type::Typedef(td) = ty else {
        bail!("BTF {typedef} is not a typedef")
    };
    let Type::Ptr(ptr) = btf.resolve_chained_type(&td)? else {
        bail!("BTF {typedef} is not a function pointer")
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr)? else {
        bail!("BTF {typedef} is not a function pointer")
    };
    let mut args = Vec::new();
    for p in proto.parameters.iter().skip(1) {
        args.push(type_name(btf, btf.resolve_chained_type(p)?, 0)?);
    }
    Ok(args)
}

/// A readable C name for a type: `struct task_struct *`, `bool`, `unsigned int`.
fn type_name(btf: &Btf, ty: Type, depth: u32) -> Result<String> {
    if depth > MAX_DEPTH {
        bail!("BTF type references nest deeper than {MAX_DEPTH} (a loop?)");
    }
    let inner = |t: &dyn btf_rs::BtfType| type_name(btf, btf.resolve_chained_type(t)?, depth + 1);
    Ok(match ty {
        Type::Ptr(p) => format!("{} *", inner(&p)?),
        Type::Struct(s) => format!("struct {}", btf.resolve_name(&s).unwrap_or_default()),
        Type::Union(u) => format!("union {}", btf.resolve_name(&u).unwrap_or_default()),
        Type::Const(c) => inner(&c)?,
        Type::Volatile(v) => inner(&v)?,
        Type::Int(i) => btf.resolve_name(&i).unwrap_or_default(),
        Type::Typedef(t) => btf.resolve_name(&t).unwrap_or_default(),
        Type::Void => "void".into(),
        other => format!("{other:?}")
            .split('(')
            .next()
            .unwrap_or("?")
            .to_lowercase(),
    })
}

/// The value of `member` of `enum name` (a C enum of 32-bit values).
pub fn enum_value(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    btf.types_named(name)
        .with_context(|| format!("BTF has no type `{name}`"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == member))
                .map(btf_rs::EnumMember::val),
            _ => None,
        })
        .with_context(|| format!("BTF enum {name} has no member `{member}`"))
}

fn named_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    btf.types_named(name)
        .with_context(|| format!("BTF has no type `{name}`"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .with_context(|| format!("BTF has no struct `{name}` with members"))
}

/// Number of arguments a BTF tracepoint passes (its `btf_trace_NAME` prototype minus the
/// leading context pointer).
pub fn tracepoint_args(btf: &Btf, name: &str) -> Result<usize> {
    let typedef = format!("btf_trace_{name}");
    let types = btf
        .types_named(&typedef)
        .with_context(|| format!("BTF has no `{typedef}`"))?;
    let Some(Type::Typedef(td)) = types.into_iter().find(|t| matches!(t, Type::Typedef(_))) else {
        bail!("BTF `{typedef}` is not a typedef");
    };
    let Type::Ptr(ptr) = btf.resolve_chained_type(&td)? else {
        bail!("BTF `{typedef}` is not a function pointer");
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr)? else {
        bail!("BTF `{typedef}` does not point to a function prototype");
    };
    Ok(proto.parameters.len().saturating_sub(1))
}

/// Size in bytes of `struct name`.
pub fn struct_size(btf: &Btf, name: &str) -> Result<u32> {
    Ok(u32::try_from(named_struct(btf, name)?.size())?)
}

/// The offset of `outer.member.inner_member`, where `member` is an embedded (or the first
/// element of an array of) `struct inner`.
pub(crate) fn nested_offset(
    btf: &Btf,
    outer: &str,
    member: &str,
    inner: &str,
    inner_member: &str,
) -> Result<u32> {
    member_offset(btf, outer, member)?
        .checked_add(member_offset(btf, inner, inner_member)?)
        .with_context(|| format!("BTF offset of {outer}.{member}.{inner_member} overflows"))
}

/// Byte offset of `member` in `struct name`, looking inside anonymous struct/union members
/// (randomized or grouped layouts put fields there).
pub fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    let bits = member_bit_offset(btf, name, member)?;
    if bits % 8 != 0 {
        bail!("BTF member {name}.{member} is a bitfield");
    }
    Ok(bits / 8)
}

/// Bit offset of `member` in `struct name` (a bitfield's own bit; other members' first).
pub fn member_bit_offset(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    let s = named_struct(btf, name)?;
    find_member(btf, &s, member, 0, 0)?
        .with_context(|| format!("BTF struct {name} has no member `{member}`"))
}

fn find_member(
    btf: &Btf,
    s: &btf_rs::Struct,
    member: &str,
    base_bits: u32,
    depth: u32,
) -> Result<Option<u32>> {
    if depth > MAX_DEPTH {
        bail!("BTF anonymous members nest deeper than {MAX_DEPTH} (a loop?)");
    }
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits
            .checked_add(m.bit_offset())
            .with_context(|| format!("BTF offset of `{member}` overflows"))?;
        if mname == member {
            return Ok(Some(bits));
        }
        if mname.is_empty() {
            let ty = btf.resolve_chained_type(m)?;
            if let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some(off) = find_member(btf, inner, member, bits, depth + 1)?
            {
                return Ok(Some(off));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
