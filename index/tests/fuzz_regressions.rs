//! Replays the fuzz targets' committed inputs: every crash found (under
//! `test_data/fuzz-regressions/`) and the seed corpus (under `../fuzz/seeds/`), so a regression
//! fails an ordinary `cargo test`, without cargo-fuzz.

use std::path::{Path, PathBuf};

use cairn_index::testing::{Parser, check_index_bytes};
use cairn_index::{ChunkIndex as _, Index, OpenOptions, Origin};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in [
        root.join("test_data/fuzz-regressions").join(target),
        root.join("../fuzz/seeds").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            if let Ok(bytes) = std::fs::read(&path) {
                found.push((path, bytes));
            }
        }
    }
    found
}

#[test]
fn committed_fuzz_inputs_replay_cleanly() {
    for (target, parser) in [
        ("index_fidx", Parser::Fixed),
        ("index_didx", Parser::Dynamic),
        ("index_casync", Parser::Casync),
    ] {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no seeds for {target}");
        for (path, bytes) in inputs {
            check_index_bytes(parser, &bytes);
            // Seeds are valid indexes, so fuzzing starts from inside the format.
            if path.to_string_lossy().contains("seeds") {
                let opened = Index::from_bytes(bytes, Origin::file(&path), &OpenOptions::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let last_end = opened.chunks().last().map_or(0, |c| c.end);
                assert_eq!(last_end, opened.image_size(), "{}", path.display());
            }
        }
    }
}
