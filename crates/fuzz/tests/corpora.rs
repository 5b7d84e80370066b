//! Every committed input of every target runs clean: the seed corpora (with the examples and
//! the broken-manifest fixtures the manifests target starts from) and, under `regressions/`,
//! every input that once crashed a target, so a bug fuzzing found stays fixed.

use std::{fs, path::PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folders a target's inputs are read from, as `scripts/fuzz` seeds AFL from them.
fn folders(target: &str) -> Vec<PathBuf> {
    let mut dirs = vec![
        root().join("corpus").join(target),
        root().join("regressions").join(target),
    ];
    if target == "manifests" {
        for dir in [
            "../../examples",
            "../../examples/local",
            "../../examples/local-pods",
            "../../crates/api/tests/invalid",
        ] {
            dirs.push(root().join(dir));
        }
    }
    dirs
}

#[test]
fn every_committed_input_runs_clean() {
    for (target, run) in remora_fuzz::TARGETS {
        let mut ran = 0;
        for dir in folders(target) {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .map(|e| e.expect("a readable folder").path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                let data = fs::read(&file).expect("a readable input");
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target} fails on {}", file.display());
                ran += 1;
            }
        }
        assert!(ran > 0, "{target} has no committed input");
    }
}
