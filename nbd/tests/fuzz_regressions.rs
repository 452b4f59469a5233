//! Replays the `nbd_session` fuzz target's committed inputs: crashes found (under
//! `test_data/fuzz-regressions/`) and the seed corpus (under `../fuzz/seeds/`).

use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
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
            if entry.path().extension().is_some_and(|e| e == "md") {
                continue;
            }
            if let Ok(bytes) = std::fs::read(entry.path()) {
                found.push(bytes);
            }
        }
    }
    found
}

#[test]
fn committed_fuzz_inputs_replay_cleanly() {
    let cases = inputs("nbd_session");
    assert!(cases.len() >= 4, "the seed corpus is there");
    cases
        .iter()
        .for_each(|c| cairn_nbd::testing::fuzz_session(c));
}
