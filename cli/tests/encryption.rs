//! PBS client-side encryption through the built binary: key files, encrypted backups and
//! restores, wrong keys and tampered chunks, the keyed zero chunk, and interop both ways with
//! an independent implementation of the format (`pbs_crypto.py`, Python's `cryptography`).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_chunk_store::KeyFile;
use common::*;

const PASSPHRASE: &str = "correct horse battery";

/// cairn with the passphrase in PBS's variable.
fn keyed(args: &[&str], passphrase: &str) -> Output {
    cairn_command(args)
        .env("PBS_ENCRYPTION_PASSWORD", passphrase)
        .output()
        .unwrap()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pbs_crypto.py")
}

/// The independent implementation, if python3 with `cryptography` and `zstandard` is here.
fn python(args: &[&str]) -> Option<Output> {
    let python = tool("python3")?;
    let usable = Command::new(&python)
        .args(["-c", "import cryptography, zstandard"])
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        required("python3 with cryptography and zstandard (pip install cryptography zstandard)");
        return None;
    }
    Some(
        Command::new(python)
            .arg(script())
            .args(args)
            .output()
            .unwrap(),
    )
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn backups_made_by_an_independent_implementation_restore_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(made) = python(&["make", s(dir.path()), PASSPHRASE]) else {
        return;
    };
    assert!(made.status.success(), "{}", said(&made));
    let fingerprint = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let image = std::fs::read(dir.path().join("image.img")).unwrap();
    let store = dir.path().join("ds");
    let key = dir.path().join("key.json");
    for index in ["image.fidx", "image.didx"] {
        let index = dir.path().join(index);
        let restored = dir.path().join("restored.img");
        ok(&keyed(
            &[
                "restore",
                "-q",
                "--store",
                s(&store),
                "--keyfile",
                s(&key),
                s(&index),
                s(&restored),
            ],
            PASSPHRASE,
        ));
        assert!(
            std::fs::read(&restored).unwrap() == image,
            "{}",
            index.display()
        );
        ok(&keyed(
            &[
                "verify",
                "-q",
                "--store",
                s(&store),
                "--keyfile",
                s(&key),
                s(&index),
            ],
            PASSPHRASE,
        ));
        let out = keyed(
            &["cat", "--store", s(&store), "--keyfile", s(&key), s(&index)],
            PASSPHRASE,
        );
        assert!(ok(&out).stdout == image);
    }
    let out = keyed(
        &[
            "info",
            "--keyfile",
            s(&key),
            s(&dir.path().join("image.fidx")),
        ],
        PASSPHRASE,
    );
    let text = String::from_utf8_lossy(&ok(&out).stdout).into_owned();
    assert!(
        text.contains(&format!("fingerprint {fingerprint}")),
        "{text}"
    );
    assert!(text.contains("sha256-keyed"), "{text}");
    let out = cairn(&["key", "show", "--json", s(&key)]);
    let shown: serde_json::Value = serde_json::from_slice(&ok(&out).stdout).unwrap();
    assert_eq!(shown["kdf"], "pbkdf2");
    assert_eq!(shown["fingerprint"], fingerprint.as_str());
}

#[test]
fn encrypted_backups_by_cairn_decode_with_the_independent_implementation() {
    let dir = tempfile::tempdir().unwrap();
    if python(&["--help"]).is_none() {
        return;
    }
    let data = mixed_image(6);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    for kdf in ["scrypt", "pbkdf2", "none"] {
        let key = dir.path().join(format!("{kdf}.json"));
        ok(&keyed(
            &["key", "create", "-q", "--kdf", kdf, s(&key)],
            PASSPHRASE,
        ));
        for format in ["fidx", "didx"] {
            let store = dir.path().join(format!("{kdf}-{format}"));
            let index = dir.path().join(format!("{kdf}.{format}"));
            ok(&keyed(
                &[
                    "backup",
                    "-q",
                    "--store",
                    s(&store),
                    "--keyfile",
                    s(&key),
                    "--format",
                    format,
                    s(&input),
                    s(&index),
                ],
                PASSPHRASE,
            ));
            let checked = python(&[
                "check",
                s(&store),
                s(&key),
                PASSPHRASE,
                s(&index),
                s(&input),
            ])
            .unwrap();
            assert!(
                checked.status.success(),
                "{kdf} {format}: {}{}",
                said(&checked),
                String::from_utf8_lossy(&checked.stdout)
            );
            // Every chunk file is an encrypted blob.
            for file in walk(&store.join(".chunks")) {
                let magic = std::fs::read(&file).unwrap()[..8].to_vec();
                assert!(
                    magic == [0x7b, 0x67, 0x85, 0xbe, 0x22, 0x2d, 0x4c, 0xf0]
                        || magic == [0xe6, 0x59, 0x1b, 0xbf, 0x0b, 0xbf, 0xd8, 0x0b],
                    "{}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn key_files_wrong_keys_tampering_and_the_keyed_zero_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    ok(&keyed(&["key", "create", "-q", s(&key)], PASSPHRASE));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read(&key).unwrap();
    let out = keyed(&["key", "create", s(&key)], PASSPHRASE);
    failed_with(&out, 2, "never overwritten");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    failed_with(
        &keyed(&["key", "create", s(&dir.path().join("short.json"))], "abc"),
        2,
        "too short",
    );

    // An image with a whole zero chunk (4 MiB chunks).
    let mut data = random_bytes(4 << 20);
    data.extend(std::iter::repeat_n(0u8, 4 << 20));
    data.extend(random_bytes(100_000));
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let store = dir.path().join("ds");
    let index = dir.path().join("disk.fidx");
    let args = |extra: &[&str]| {
        let mut all = vec!["--store", s(&store), "--keyfile", s(&key)];
        all.extend_from_slice(extra);
        all.iter().map(|a| (*a).to_owned()).collect::<Vec<String>>()
    };
    let run = |command: &str, extra: &[&str], passphrase: &str| {
        let mut all = vec![command.to_owned()];
        all.extend(args(extra));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        keyed(&refs, passphrase)
    };
    ok(&run("backup", &["-q", s(&input), s(&index)], PASSPHRASE));
    let opened = KeyFile::load(&key)
        .unwrap()
        .decrypt(Some(PASSPHRASE.as_bytes()))
        .unwrap();
    let zero = opened.digest(&vec![0u8; 4 << 20]);
    let hex = cairn_chunk_store::to_hex(&zero);
    let zero_file = store.join(".chunks").join(&hex[..4]).join(&hex);
    assert!(
        zero_file.exists(),
        "the keyed zero chunk is stored, as PBS stores it"
    );
    // The zero chunk is known by its keyed digest and never read: without its file the
    // restore is still whole.
    let zero_blob = std::fs::read(&zero_file).unwrap();
    std::fs::remove_file(&zero_file).unwrap();
    let restored = dir.path().join("restored.img");
    ok(&run(
        "restore",
        &["-q", s(&index), s(&restored)],
        PASSPHRASE,
    ));
    assert!(std::fs::read(&restored).unwrap() == data);
    std::fs::write(&zero_file, zero_blob).unwrap();

    // A wrong passphrase: exit 1, no output.
    let wrong = dir.path().join("wrong.img");
    let out = run(
        "restore",
        &["-q", s(&index), s(&wrong)],
        "not the passphrase",
    );
    failed_with(&out, 1, "wrong passphrase");
    assert!(!wrong.exists());
    // No key: it says a key is needed, and which magic it saw.
    let out = cairn(&["restore", "-q", "--store", s(&store), s(&index), s(&wrong)]);
    let message = failed_with(&out, 1, "key required");
    assert!(message.contains("encrypted"), "{message}");
    assert!(!wrong.exists());
    // Another key: decryption fails, naming the chunk.
    let other = dir.path().join("other.json");
    ok(&keyed(
        &["key", "create", "-q", "--kdf", "none", s(&other)],
        PASSPHRASE,
    ));
    let out = keyed(
        &[
            "restore",
            "-q",
            "--store",
            s(&store),
            "--keyfile",
            s(&other),
            s(&index),
            s(&wrong),
        ],
        PASSPHRASE,
    );
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(!wrong.exists());
    // A flipped ciphertext byte with the CRC made right: the tag fails.
    let victim = walk(&store.join(".chunks"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut blob = std::fs::read(&victim).unwrap();
    blob[100] ^= 1;
    let crc = crc32(&blob[44..]);
    blob[8..12].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&victim, &blob).unwrap();
    let out = run("restore", &["-q", s(&index), s(&wrong)], PASSPHRASE);
    let message = failed_with(&out, 1, "decryption failed: wrong key or tampered chunk");
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(message.contains(&name), "{message}");
    assert!(!wrong.exists());
    let out = run("verify", &[s(&index)], PASSPHRASE);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    // An authentic chunk under another chunk's digest: the keyed digest catches it.
    let (good, moved): (Vec<_>, Vec<_>) = walk(&store.join(".chunks"))
        .into_iter()
        .filter(|p| *p != victim)
        .partition(|p| *p == zero_file);
    std::fs::copy(&good[0], &moved[0]).unwrap();
    let out = run("restore", &["-q", s(&index), s(&wrong)], PASSPHRASE);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(!wrong.exists());
    // casync has no encrypted format.
    let out = run(
        "backup",
        &[
            "--format",
            "caibx",
            s(&input),
            s(&dir.path().join("x.caibx")),
        ],
        PASSPHRASE,
    );
    failed_with(&out, 2, "casync has no encrypted format");
}

/// IEEE CRC-32, bit by bit (the test's own, not the crate's).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn serve_nbd_serves_an_encrypted_backup_with_its_key() {
    let Some(nbdcopy) = tool("nbdcopy") else {
        return;
    };
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    ok(&keyed(
        &["key", "create", "-q", "--kdf", "pbkdf2", s(&key)],
        PASSPHRASE,
    ));
    let data = mixed_image(4);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let store = dir.path().join("ds");
    let index = dir.path().join("disk.img.fidx");
    ok(&keyed(
        &[
            "backup",
            "-q",
            "--store",
            s(&store),
            "--keyfile",
            s(&key),
            s(&input),
            s(&index),
        ],
        PASSPHRASE,
    ));
    let mut server = cairn_command(&[
        "serve-nbd",
        "--store",
        s(&store),
        "--keyfile",
        s(&key),
        "--listen",
        "127.0.0.1:0",
        s(&index),
    ])
    .env("PBS_ENCRYPTION_PASSWORD", PASSPHRASE)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut banner = String::new();
    std::io::BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("nbd://"))
        .unwrap_or_else(|| panic!("no URL in {banner:?}"))
        .trim_end_matches(';')
        .to_owned();
    let copied = dir.path().join("copied.img");
    let out = Command::new(nbdcopy)
        .arg(&url)
        .arg(&copied)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        std::fs::read(&copied).unwrap() == data,
        "served image differs"
    );
}
