//! Replays the fuzz targets' committed inputs: crashes found (under
//! `test_data/fuzz-regressions/`) and the seed corpus (under `../fuzz/seeds/`).

use std::path::Path;

use cairn_chunk_store::codec_checks::{check_blob_bytes, check_casync_chunk_bytes};

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
    let blobs = inputs("blob_decode");
    assert!(!blobs.is_empty());
    blobs.iter().for_each(|b| check_blob_bytes(b));
    let chunks = inputs("casync_chunk_decode");
    assert!(!chunks.is_empty());
    chunks.iter().for_each(|c| check_casync_chunk_bytes(c));
}
