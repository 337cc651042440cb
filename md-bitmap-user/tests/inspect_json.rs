//! `inspect --json` output validated against docs/schema/inspect.schema.json, for members of every
//! kind (0.90 in both byte orders, 1.x, lockless initialised or not, clustered with an unreadable
//! slot, warnings), and checked against the parsed values.
#[path = "inspect_support.rs"]
mod support;

use md_bitmap::inspect::{InspectArgs, InspectRecord, run_to};
use serde_json::Value;
use support::{BitmapSpec, Meta, Spec, build, write_image};

fn schema() -> jsonschema::Validator {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/schema/inspect.schema.json"
    );
    let s: Value = serde_json::from_str(&std::fs::read_to_string(p).expect("schema file"))
        .expect("schema is JSON");
    jsonschema::validator_for(&s).expect("schema compiles")
}

fn members() -> Vec<(&'static str, Spec)> {
    let mut v = vec![
        (
            "v090le",
            Spec::new(
                Meta::V090Le,
                4096,
                Some(BitmapSpec::classic(65536, 16000, vec![1, 2])),
            ),
        ),
        (
            "v090be",
            Spec::new(
                Meta::V090Be,
                4096,
                Some(BitmapSpec::classic(65536, 16000, vec![7])),
            ),
        ),
        (
            "v10",
            Spec::new(
                Meta::V10,
                4096,
                Some(BitmapSpec::classic(4096, 8000, (0..100).collect())),
            ),
        ),
        (
            "v11",
            Spec::new(
                Meta::V11,
                4096,
                Some(BitmapSpec::classic(1 << 26, 1 << 30, vec![])),
            ),
        ),
        (
            "lockless",
            Spec::new(
                Meta::V12,
                4096,
                Some(BitmapSpec::lockless(
                    128,
                    1000,
                    vec![0, 1, 2, 3, 4, 9, 1, 1],
                )),
            ),
        ),
    ];
    let mut b = BitmapSpec::lockless(128, 1000, vec![]);
    b.state = (1 << 3) | (1 << 4);
    v.push(("lockless-first-use", Spec::new(Meta::V12, 4096, Some(b))));
    let mut b = BitmapSpec::classic(65536, 16000, vec![0]);
    b.version = 5;
    b.nodes = 2;
    b.cluster_name = "c".into();
    v.push(("clustered-cut", Spec::new(Meta::V12, 24, Some(b))));
    let mut s = Spec::new(
        Meta::V12,
        4096,
        Some(BitmapSpec::classic(65536, 16000, vec![3])),
    );
    s.bad_checksum = true;
    s.role = 0xffff;
    v.push(("badsum-spare", s));
    v
}

fn output(args: &InspectArgs) -> String {
    let mut out = Vec::new();
    run_to(args, 80, &mut out).expect("inspect succeeds");
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn json_lines_validate_against_the_schema() {
    let validator = schema();
    let dir = tempfile::tempdir().unwrap();
    let specs = members();
    let paths: Vec<_> = specs
        .iter()
        .map(|(n, s)| write_image(dir.path(), &format!("{n}.img"), &build(s)))
        .collect();
    let text = output(&InspectArgs {
        members: paths.clone(),
        json: true,
        map: false,
        width: None,
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), specs.len(), "one line per member:\n{text}");
    for ((name, spec), line) in specs.iter().zip(&lines) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}\n{line}");
        let rec: InspectRecord = serde_json::from_value(v).unwrap();
        assert_eq!(rec.kind, "inspect");
        assert_eq!(rec.schema_version, 1);
        assert_eq!(rec.device_kind, "regular_file");
        assert_eq!(rec.bitmap_offset_bytes, spec.bitmap_byte(), "{name}");
        let b = spec.bitmap.as_ref().unwrap();
        assert_eq!(rec.version, b.version);
        assert_eq!(rec.sync_size_sectors, b.sync_size);
        match *name {
            "v090le" => {
                assert_eq!(rec.superblock.metadata_version, "0.90");
                assert_eq!(rec.dirty_ranges, vec![[1, 3]]);
                assert_eq!(rec.chunks, 125);
                assert_eq!(rec.superblock.device_slot, Some(1));
            }
            "v090be" => assert_eq!(rec.superblock.byte_order, "big"),
            "v10" => {
                assert_eq!(rec.superblock.metadata_version, "1.0");
                assert_eq!(rec.dirty_chunks, 100);
                assert_eq!(rec.dirty_ranges, vec![[0, 100]]);
            }
            "lockless" => {
                assert_eq!(rec.chunk_size_bytes, 65536);
                let l = rec.lockless.unwrap();
                assert!(l.initialized);
                assert_eq!(l.state_counts.unwrap()["clean"], 3);
                assert_eq!(rec.dirty_ranges, vec![[2, 6]]);
            }
            "lockless-first-use" => {
                assert!(!rec.lockless.unwrap().initialized);
                assert_eq!(rec.state_flags, vec!["first_use", "clean"]);
                assert!(!rec.warnings.is_empty());
            }
            "clustered-cut" => {
                let c = rec.cluster.unwrap();
                assert_eq!(c.nodes, 2);
                assert!(c.slots[0].error.is_none());
                assert!(c.slots[1].error.is_some());
            }
            "badsum-spare" => {
                assert!(!rec.superblock.checksum_valid);
                assert_eq!(rec.superblock.device_role, "spare");
                assert_eq!(rec.superblock.device_slot, None);
                assert!(rec.warnings.iter().any(|w| w.contains("checksum")));
            }
            _ => {}
        }
    }
}

#[test]
fn schema_rejects_records_that_break_it() {
    let validator = schema();
    let dir = tempfile::tempdir().unwrap();
    let (_, spec) = &members()[0];
    let p = write_image(dir.path(), "m.img", &build(spec));
    let text = output(&InspectArgs {
        members: vec![p],
        json: true,
        map: false,
        width: None,
    });
    let good: Value = serde_json::from_str(text.trim()).unwrap();
    assert!(validator.is_valid(&good));
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("dirty_ranges");
    assert!(!validator.is_valid(&missing));
    let mut wrong = good.clone();
    wrong["chunks"] = Value::from(-1);
    assert!(!validator.is_valid(&wrong));
    let mut extra = good.clone();
    extra["surprise"] = Value::from(1);
    assert!(!validator.is_valid(&extra));
    let mut bad_range = good;
    bad_range["dirty_ranges"] = serde_json::json!([[1, 2, 3]]);
    assert!(!validator.is_valid(&bad_range));
}

#[test]
fn text_and_map_output_through_run() {
    let dir = tempfile::tempdir().unwrap();
    let specs = members();
    let p0 = write_image(dir.path(), "a.img", &build(&specs[0].1));
    let p1 = write_image(dir.path(), "b.img", &build(&specs[2].1));
    let text = output(&InspectArgs {
        members: vec![p0.clone(), p1],
        json: false,
        map: true,
        width: Some(60),
    });
    // Two mdadm-style blocks, each followed by its map.
    assert_eq!(text.matches("        Filename : ").count(), 2);
    assert!(text.starts_with(&format!("        Filename : {}\n", p0.display())));
    assert_eq!(text.matches("1 column = ").count(), 2, "{text}");
    // --width 60 holds for the rows.
    assert!(
        text.lines()
            .filter(|l| l.ends_with('|'))
            .all(|l| l.len() <= 60),
        "{text}"
    );
    assert!(text.contains("2 of 125 chunks dirty"), "{text}");
}
