//! Each rule has a fixture folder, `fixtures/<code>`, that must produce exactly that code;
//! `fixtures/clean` produces nothing; `docs/analyze.md` explains every code.

use std::path::{Path, PathBuf};

use remora_analyze::{Finding, IGNORE_ANNOTATION, Input, RULES, analyze};
use remora_api::ValidationSettings;
use remora_inputs::load_dir;
use remora_model::input::Object;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn findings_with(name: &str, edit: impl FnOnce(&mut [Object])) -> Vec<Finding> {
    let mut loaded = load_dir(&fixture(name)).expect("the fixture loads");
    edit(&mut loaded.objects);
    analyze(&Input {
        objects: &loaded.objects,
        origins: &loaded.origins,
        unreadable: &loaded.problems,
        validation: ValidationSettings::default(),
    })
}

fn findings(name: &str) -> Vec<Finding> {
    findings_with(name, |_| {})
}

#[test]
fn each_rules_fixture_produces_exactly_its_code() {
    for rule in RULES {
        let found = findings(rule.code);
        assert!(!found.is_empty(), "{}: no finding", rule.code);
        for f in &found {
            assert_eq!(f.code, rule.code, "{}: {f}", rule.code);
            assert_eq!((f.rule, f.severity), (rule.name, rule.severity));
        }
    }
}

#[test]
fn the_clean_fixture_produces_nothing() {
    assert_eq!(findings("clean"), []);
}

#[test]
fn a_finding_names_its_file_object_and_field() {
    let found = findings("REM003");
    let [f] = &found[..] else {
        panic!("one finding expected: {found:?}")
    };
    assert_eq!(
        f.file.as_deref(),
        Some(fixture("REM003/10-route.yaml").to_str().expect("utf-8"))
    );
    assert_eq!(f.document, Some(1));
    assert_eq!(
        (f.kind, f.object.as_deref()),
        (Some("TrafficRoute"), Some("demo/reviews"))
    );
    assert_eq!(
        f.field.as_deref(),
        Some("spec.http[0].matches[0].path.value")
    );
    assert!(f.message.contains("RE2 program size"), "{}", f.message);
    let line = f.to_string();
    assert!(
        line.contains(
            "10-route.yaml#1 TrafficRoute demo/reviews: error REM003 regex-refused: spec.http[0]"
        ),
        "{line}"
    );
    // A raised limit, as proxies started with it would take, lets the regex through.
    let loaded = load_dir(&fixture("REM003")).expect("loads");
    let raised = analyze(&Input {
        objects: &loaded.objects,
        origins: &loaded.origins,
        unreadable: &loaded.problems,
        validation: ValidationSettings {
            max_regex_program_size: 10_000,
        },
    });
    assert_eq!(raised, []);
}

#[test]
fn an_annotation_suppresses_a_rule_by_code_or_name_on_its_object_only() {
    let annotate = |value: &'static str| {
        move |objects: &mut [Object]| {
            for o in objects {
                if let Object::TrafficRoute(r) = o {
                    r.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert(IGNORE_ANNOTATION.into(), value.into());
                }
            }
        }
    };
    assert_eq!(findings_with("REM102", annotate("REM102")), []);
    assert_eq!(
        findings_with("REM102", annotate("rem101, shadowed-rule")),
        []
    );
    assert_eq!(findings_with("REM102", annotate("REM101")).len(), 1);
}

#[test]
fn every_rule_is_documented() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/analyze.md");
    let text = std::fs::read_to_string(&docs).expect("docs/analyze.md");
    for rule in RULES {
        let heading = format!("### {} `{}`", rule.code, rule.name);
        assert!(text.contains(&heading), "docs/analyze.md lacks {heading:?}");
    }
}
