use proptest::prelude::*;

use super::*;

const FIXTURES: &str = include_str!("../../../tests/fixtures/cgroup-paths.txt");

fn dash(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

#[test]
fn every_documented_layout_is_read() {
    let mut n = 0;
    for line in FIXTURES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "bad fixture line {line:?}");
        let a = parse(cols[0]);
        assert_eq!(
            a.pod_uid.as_deref(),
            dash(cols[1]),
            "pod uid of {}",
            cols[0]
        );
        let container = a
            .container
            .as_ref()
            .map(|(rt, id)| format!("{}:{id}", rt.as_str()));
        assert_eq!(
            container.as_deref(),
            dash(cols[2]),
            "container of {}",
            cols[0]
        );
        assert_eq!(a.unit.as_deref(), dash(cols[3]), "unit of {}", cols[0]);
        n += 1;
    }
    assert!(n >= 25, "only {n} fixtures");
}

#[test]
fn pod_log_directories_name_namespace_pod_and_uid() {
    assert_eq!(
        parse_pod_log_dir(
            "kube-system_coredns-7db6d8ff4d-x2v9k_1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"
        ),
        Some((
            "kube-system".into(),
            "coredns-7db6d8ff4d-x2v9k".into(),
            "1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e".into()
        ))
    );
    // A static pod's uid is a hash.
    assert_eq!(
        parse_pod_log_dir("kube-system_etcd-node1_5a8f5c7d3b2e1f0a9b8c7d6e5f4a3b2c")
            .map(|(_, _, uid)| uid),
        Some("5a8f5c7d3b2e1f0a9b8c7d6e5f4a3b2c".into())
    );
    for bad in [
        "",
        "a_b",
        "a_b_notauid",
        "_pod_1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e",
    ] {
        assert_eq!(parse_pod_log_dir(bad), None, "{bad}");
    }
}

#[test]
fn container_log_links_name_the_container() {
    let id = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";
    assert_eq!(
        parse_container_log(&format!(
            "coredns-7db6d8ff4d-x2v9k_kube-system_coredns-{id}.log"
        )),
        Some(("coredns".into(), id.into()))
    );
    assert_eq!(
        parse_container_log(&format!("web_default_side-car-{id}.log")),
        Some(("side-car".into(), id.into()))
    );
    assert_eq!(parse_container_log("web_default_x-123.log"), None);
    assert_eq!(parse_container_log(&format!("web_default_x-{id}")), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any path is read without a panic, and whatever is found was in the path.
    #[test]
    fn proptest_arbitrary_paths(path in "(/[-_.@a-z0-9]{0,70}){0,8}") {
        let a = parse(&path);
        if let Some((_, id)) = &a.container {
            prop_assert!(path.contains(id.as_str()));
        }
        if let Some(unit) = &a.unit {
            prop_assert!(path.contains(unit.as_str()));
            prop_assert!(a.container.is_none() && a.pod_uid.is_none());
        }
    }
}
