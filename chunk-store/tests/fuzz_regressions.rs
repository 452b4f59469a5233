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

/// The committed seeds of the encryption targets hold their checks (and the plain seed
/// decrypts with the check's key to what it says).
#[cfg(feature = "crypto")]
#[test]
fn encryption_seeds_hold_their_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, check) in [
        (
            "encrypted_blob_decode",
            cairn_chunk_store::codec_checks::check_encrypted_blob_bytes as fn(&[u8]),
        ),
        (
            "key_file",
            cairn_chunk_store::codec_checks::check_key_file_bytes,
        ),
    ] {
        let mut seen = 0;
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            check(&std::fs::read(entry.unwrap().path()).unwrap());
            seen += 1;
        }
        assert!(seen >= 2, "{target}: {seen} seeds");
    }
    let seed = std::fs::read(root.join("encrypted_blob_decode/plain-hello")).unwrap();
    let key = cairn_chunk_store::CryptKey::new([0x5a; 32]);
    assert_eq!(
        key.decrypt(&seed[2..], 64).unwrap(),
        b"hello encrypted proxmox"
    );
    let file = std::fs::read(root.join("key_file/none.json")).unwrap();
    let opened = cairn_chunk_store::KeyFile::parse(&file)
        .unwrap()
        .decrypt(None)
        .unwrap();
    assert_eq!(
        opened.fingerprint().to_string(),
        "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"
    );
}
