//! Every load-time global of the BPF object, one struct per concern
//! (`proclens_common::config`). Each concern's set-up fills its own part; [`Globals::apply`]
//! hands all of them to the loader at once, so a global is never left at the zero the
//! object was built with (a unit test checks the object holds no other global).

use aya::EbpfLoader;
use proclens_common::config::{
    Copies, Filter, Forks, Global, Irq, Lifecycle, Rings, Switch, Task, Waits,
};

/// aya-log's load-time level (`aya_log_ebpf`'s `AYA_LOG_LEVEL`, a `u8` in `.rodata`): the
/// most verbose level the programs log; 0 makes the verifier prune every log call.
pub const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

macro_rules! globals {
    ($($field:ident: $ty:ty,)*) => {
        /// The load-time globals, one struct per concern.
        #[derive(Debug, Clone, Default)]
        pub struct Globals {
            $(pub $field: $ty,)*
            /// aya-log's level (see [`AYA_LOG_LEVEL`]).
            pub log_level: u8,
        }

        impl Globals {
            /// (name, size) of every global [`Globals::apply`] writes.
            #[cfg_attr(not(test), allow(dead_code, reason = "checked against the object in tests"))]
            pub const WRITTEN: &[(&str, usize)] = &[
                $((<$ty as Global>::NAME, size_of::<$ty>()),)*
                (AYA_LOG_LEVEL, size_of::<u8>()),
            ];

            /// Writes every global into the loader (each must exist in the object).
            pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
                $(loader.override_global(<$ty as Global>::NAME, &self.$field, true);)*
                loader.override_global(AYA_LOG_LEVEL, &self.log_level, true);
            }
        }
    };
}

globals! {
    task: Task,
    filter: Filter,
    switch: Switch,
    rings: Rings,
    lifecycle: Lifecycle,
    copies: Copies,
    forks: Forks,
    irq: Irq,
    waits: Waits,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

    use super::*;
    use crate::collect::tracer::OBJECT;

    /// The globals of the embedded BPF object: every symbol of its read-only data, with
    /// its size.
    fn rodata_symbols() -> BTreeMap<String, usize> {
        let obj = object::File::parse(OBJECT).expect("the embedded BPF object parses");
        let rodata: Vec<_> = obj
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".rodata")))
            .map(|s| s.index())
            .collect();
        assert!(!rodata.is_empty(), "the object has no .rodata");
        obj.symbols()
            .filter(|s| s.section_index().is_some_and(|i| rodata.contains(&i)))
            .filter(|s| s.is_global() && s.size() > 0)
            .map(|s| (s.name().unwrap().to_string(), s.size() as usize))
            .collect()
    }

    /// Userspace reads the object's `.bss` as one `CpuTable` (see `collect::switch`): any
    /// other zeroed global there would change its size, and the read would fail.
    #[test]
    fn the_bss_holds_the_cpu_state_table_alone() {
        let obj = object::File::parse(OBJECT).expect("the embedded BPF object parses");
        let bss: Vec<_> = obj
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".bss")))
            .map(|s| (s.name().unwrap().to_string(), s.size() as usize))
            .collect();
        assert_eq!(
            bss,
            [(
                ".bss".to_string(),
                size_of::<proclens_common::switch::CpuTable>()
            )]
        );
    }

    /// A global nobody sets reads as 0 in the kernel, silently: every global the object
    /// holds must be one the loader writes, with the size it writes.
    #[test]
    fn every_global_of_the_object_is_written_by_the_loader() {
        let in_object = rodata_symbols();
        let written: BTreeMap<String, usize> = Globals::WRITTEN
            .iter()
            .map(|(n, s)| ((*n).to_string(), *s))
            .collect();
        assert_eq!(in_object, written);
    }
}
