use std::fmt::Write as _;

use proptest::{prelude::*, sample::Index};

use super::*;

const SWITCH_6_18: &str = include_str!("../../../tests/fixtures/6.18-sched_switch.format");
const SWITCH_5_10: &str = include_str!("../../../tests/fixtures/5.10-sched_switch.format");
const WAKEUP_6_18: &str = include_str!("../../../tests/fixtures/6.18-sched_wakeup.format");
const FORK_6_18: &str = include_str!("../../../tests/fixtures/6.18-sched_process_fork.format");
const FORK_5_10: &str = include_str!("../../../tests/fixtures/5.10-sched_process_fork.format");

#[test]
fn sched_switch_6_18() {
    let f = parse_format(SWITCH_6_18).unwrap();
    assert_eq!(f.name, "sched_switch");
    assert_eq!(f.id, 372);
    let st = f.int_field("prev_state", &[4, 8]).unwrap();
    assert_eq!((st.offset, st.size, st.signed), (32, 8, true));
    assert_eq!(f.field("next_pid").unwrap().offset, 56);
    assert_eq!(f.field("prev_comm").unwrap().size, 16);
    assert_eq!(f.field("common_pid").unwrap().offset, 4);
}

#[test]
fn sched_switch_5_10() {
    let f = parse_format(SWITCH_5_10).unwrap();
    let st = f.int_field("prev_state", &[4, 8]).unwrap();
    assert_eq!((st.offset, st.size), (32, 8));
    assert_eq!(f.field("prev_pid").unwrap().offset, 24);
}

#[test]
fn wakeup_pid() {
    let f = parse_format(WAKEUP_6_18).unwrap();
    let pid = f.int_field("pid", &[4]).unwrap();
    assert_eq!((pid.offset, pid.size), (24, 4));
}

#[test]
fn fork_comm_is_data_loc_on_6_18_but_array_on_5_10() {
    let new = parse_format(FORK_6_18).unwrap();
    assert!(new.field("parent_comm").unwrap().is_data_loc());
    assert_eq!(new.field("child_pid").unwrap().offset, 20);
    assert!(
        new.int_field("parent_comm", &[4]).is_err(),
        "a __data_loc is not an integer"
    );
    let old = parse_format(FORK_5_10).unwrap();
    let comm = old.field("parent_comm").unwrap();
    assert!(!comm.is_data_loc());
    assert_eq!(comm.size, 16);
    assert_eq!(old.field("child_pid").unwrap().offset, 56);
}

/// Every format file in tests/fixtures (sched and syscalls, 5.10 and 6.18).
const FIXTURES: [&str; 11] = [
    SWITCH_6_18,
    SWITCH_5_10,
    WAKEUP_6_18,
    FORK_6_18,
    FORK_5_10,
    include_str!("../../../tests/fixtures/6.18-sys_enter_mmap.format"),
    include_str!("../../../tests/fixtures/6.18-sys_enter_read.format"),
    include_str!("../../../tests/fixtures/6.18-sys_enter_sendfile64.format"),
    include_str!("../../../tests/fixtures/6.18-sys_exit_mmap.format"),
    include_str!("../../../tests/fixtures/6.18-sys_exit_read.format"),
    include_str!("../../../tests/fixtures/6.18-sys_exit_sendfile64.format"),
];

/// What any accepted format guarantees: at least one field, each with a C identifier
/// as its name, findable by that name.
fn assert_well_formed(f: &Format) -> Result<(), TestCaseError> {
    prop_assert!(!f.fields.is_empty());
    for field in &f.fields {
        prop_assert!(
            !field.name.is_empty()
                && field
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{field:?}"
        );
        prop_assert!(f.field(&field.name).is_ok());
    }
    Ok(())
}

/// A field as the kernel declares it: a type, a name, maybe an array suffix.
fn field_strategy() -> impl Strategy<Value = Field> {
    (
        prop::sample::select(vec![
            "int",
            "unsigned int",
            "long",
            "unsigned long",
            "pid_t",
            "char",
            "const char *",
            "__data_loc char[]",
            "struct foo *",
        ]),
        "[a-z_][a-z0-9_]{0,20}",
        prop::option::of(0u32..64),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(ty, name, array, offset, size, signed)| {
            let suffix = array.map(|n| format!("[{n}]")).unwrap_or_default();
            let decl = match ty.strip_suffix("[]") {
                // `__data_loc char[] name`: the brackets belong to the type.
                Some(_) => format!("{ty} {name}"),
                None => format!("{ty} {name}{suffix}"),
            };
            Field {
                decl,
                name,
                offset,
                size,
                signed,
            }
        })
}

/// A format file as tracefs prints it.
fn render(name: &str, id: u32, fields: &[Field], common: usize) -> String {
    let mut text = format!("name: {name}\nID: {id}\nformat:\n");
    for (i, f) in fields.iter().enumerate() {
        if i == common {
            text.push('\n');
        }
        let _ = writeln!(
            text,
            "\tfield:{};\toffset:{};\tsize:{};\tsigned:{};",
            f.decl,
            f.offset,
            f.size,
            u8::from(f.signed)
        );
    }
    text.push_str("\nprint fmt: \"x=%d\", REC->x\n");
    text
}

/// Format-file vocabulary, so random texts reach deep into the parser.
fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "name:",
            "ID:",
            "format:",
            "field:",
            "offset:",
            "size:",
            "signed:",
            ";",
            ":",
            "\t",
            "\n",
            " ",
            "[",
            "]",
            "[]",
            "__data_loc",
            "char",
            "x",
            "a_b",
            "0",
            "1",
            "16",
            "4294967295",
            "4294967296",
            "-1",
            "é",
            "\u{0}",
        ]),
        0..64,
    )
    .prop_map(|t| t.concat())
}

/// `text` with one byte changed (flip, insert or delete), read back as tracefs text.
fn mutate(text: &str, at: Index, op: u8, byte: u8) -> String {
    let mut b = text.as_bytes().to_vec();
    let i = at.index(b.len() + 1);
    match op % 3 {
        0 if i < b.len() => b[i] ^= byte.max(1),
        1 => b.insert(i, byte),
        _ if i < b.len() => {
            b.remove(i);
        }
        _ => b.push(byte),
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary text (random or built from format-file words) is parsed or rejected,
    /// never a panic; whatever is accepted is well formed.
    #[test]
    fn proptest_arbitrary_text(text in prop_oneof![any::<String>(), token_soup()]) {
        if let Ok(f) = parse_format(&text) {
            assert_well_formed(&f)?;
        }
    }

    /// A format generated from random fields parses back to exactly those fields, and
    /// `int_field` accepts a field exactly when it is an integer of an allowed size.
    #[test]
    fn proptest_generated_format_round_trips(
        name in "[a-z_][a-z0-9_]{0,30}",
        id in any::<u32>(),
        fields in prop::collection::vec(field_strategy(), 1..12),
        common in any::<Index>(),
        sizes in prop::collection::vec(prop::sample::select(vec![1u32, 2, 4, 8]), 0..3),
    ) {
        // Names are unique in a real format; keep the first of each.
        let mut seen = std::collections::HashSet::new();
        let fields: Vec<Field> = fields.into_iter().filter(|f| seen.insert(f.name.clone())).collect();
        let text = render(&name, id, &fields, common.index(fields.len() + 1));
        let got = parse_format(&text).map_err(|e| TestCaseError::fail(format!("{e:#}\n{text}")))?;
        prop_assert_eq!(&got, &Format { name: name.clone(), id, fields: fields.clone() });
        for f in &fields {
            let ok = !f.is_data_loc() && sizes.contains(&f.size);
            prop_assert_eq!(got.int_field(&f.name, &sizes).is_ok(), ok, "{:?} {:?}", f, sizes);
        }
    }

    /// Every fixture cut anywhere is rejected or parses to the fixture's leading fields,
    /// the last of which may have lost digits of its size (a cut inside `size:16;`).
    #[test]
    fn proptest_truncated_fixtures(which in any::<Index>(), cut in any::<Index>()) {
        let text = FIXTURES[which.index(FIXTURES.len())];
        let full = parse_format(text).unwrap();
        let cut = cut.index(text.len() + 1);
        let Ok(got) = parse_format(&String::from_utf8_lossy(&text.as_bytes()[..cut])) else {
            return Ok(());
        };
        prop_assert_eq!((&got.name, got.id), (&full.name, full.id));
        let n = got.fields.len();
        prop_assert!(n <= full.fields.len());
        prop_assert_eq!(&got.fields[..n - 1], &full.fields[..n - 1]);
        let (last, orig) = (&got.fields[n - 1], &full.fields[n - 1]);
        prop_assert_eq!((&last.decl, &last.name, last.offset), (&orig.decl, &orig.name, orig.offset));
        prop_assert!(orig.size.to_string().starts_with(&last.size.to_string()), "{last:?} {orig:?}");
    }

    /// Every fixture with a byte flipped, inserted or removed is parsed or rejected,
    /// never a panic; no mutation adds fields.
    #[test]
    fn proptest_mutated_fixtures(
        which in any::<Index>(),
        at in any::<Index>(),
        op in any::<u8>(),
        byte in any::<u8>(),
    ) {
        let text = FIXTURES[which.index(FIXTURES.len())];
        let full = parse_format(text).unwrap();
        if let Ok(got) = parse_format(&mutate(text, at, op, byte)) {
            assert_well_formed(&got)?;
            prop_assert!(got.fields.len() <= full.fields.len());
        }
    }
}

#[test]
fn malformed_formats_are_errors() {
    for bad in [
        "",
        "name: x\n",
        "name: x\nID: 1\n",
        "name: x\nID: nope\nformat:\n\tfield:int a;\toffset:0;\tsize:4;\tsigned:1;\n",
        "name: x\nID: 1\nformat:\n\tfield:int a;\toffset:zz;\tsize:4;\tsigned:1;\n",
        "name: x\nID: 1\nformat:\n\tfield:int a;\tsize:4;\n",
        "name: x\nID: 1\nformat:\n\tfield:;\toffset:0;\tsize:4;\n",
        "name: x\nID: 1\nformat:\n\tfield\n",
    ] {
        assert!(parse_format(bad).is_err(), "accepted {bad:?}");
    }
    assert!(parse_format(SWITCH_6_18).unwrap().field("nope").is_err());
}
