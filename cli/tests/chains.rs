//! `--store A --store B` and `--disk-cache` on local stores, through the built binary.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::Path;

use common::*;

/// Every chunk file of the PBS datastore at `store`, sorted.
fn chunk_files(store: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = walk(&store.join(".chunks"));
    files.sort();
    files
}

#[test]
fn a_chain_reads_each_chunk_from_the_first_store_that_has_it_and_warns_of_bad_copies() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(6);
    let (first, index) = backed_up(dir.path(), "disk", &data);
    // The second store has every chunk; the first loses half and has one damaged.
    let second = dir.path().join("second");
    for file in chunk_files(&first) {
        let to = second.join(file.strip_prefix(&first).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, to).unwrap();
    }
    let files = chunk_files(&first);
    assert!(files.len() >= 6, "{} chunks", files.len());
    for file in files.iter().step_by(2) {
        std::fs::remove_file(file).unwrap();
    }
    // The largest kept chunk (not the zero chunk, which a restore never reads).
    let damaged = files
        .iter()
        .skip(1)
        .step_by(2)
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(damaged, bytes).unwrap();

    // Alone, the first store cannot restore the image.
    let out = cairn(&[
        "restore",
        "-q",
        "--store",
        s(&first),
        s(&index),
        s(&dir.path().join("x")),
    ]);
    assert_eq!(out.status.code(), Some(1));

    let restored = dir.path().join("restored.img");
    let out = cairn(&[
        "restore",
        "-q",
        "--store",
        s(&first),
        "--store",
        s(&second),
        s(&index),
        s(&restored),
    ]);
    ok(&out);
    assert!(
        std::fs::read(&restored).unwrap() == data,
        "restored image differs"
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let warnings: Vec<&str> = said.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{said}");
    assert!(
        warnings[0].contains(&damaged.display().to_string())
            && warnings[0].contains("reading it from the next store"),
        "{said}"
    );
    // verify through the chain: every chunk good.
    ok(&cairn(&[
        "verify",
        "-q",
        "--store",
        s(&first),
        "--store",
        s(&second),
        s(&index),
    ]));

    // A backup through a chain writes to the first store only.
    let input = dir.path().join("new.img");
    std::fs::write(&input, random_bytes(3 << 20)).unwrap();
    let before = chunk_files(&second).len();
    ok(&cairn(&[
        "backup",
        "-q",
        "--store",
        s(&first),
        "--store",
        s(&second),
        "--chunk-size",
        "1M",
        s(&input),
        s(&dir.path().join("new.fidx")),
    ]));
    assert_eq!(chunk_files(&second).len(), before);
    restore(
        &first,
        &dir.path().join("new.fidx"),
        &dir.path().join("new.out"),
    );
    assert!(std::fs::read(dir.path().join("new.out")).unwrap() == std::fs::read(&input).unwrap());
}

/// `cairn restore -q --store STORE --disk-cache CACHE INDEX OUTPUT`, which must succeed and
/// give `data`; its stderr.
fn restore_through(cache: &Path, store: &Path, index: &Path, output: &Path, data: &[u8]) -> String {
    let out = cairn(&[
        "restore",
        "-q",
        "--store",
        s(store),
        "--disk-cache",
        s(cache),
        "--disk-cache-size",
        "64MiB",
        s(index),
        s(output),
    ]);
    ok(&out);
    assert!(
        std::fs::read(output).unwrap() == data,
        "{} differs",
        output.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_disk_cache_fills_from_the_store_serves_next_time_and_shrugs_off_damage() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(6);
    let (store, index) = backed_up(dir.path(), "disk", &data);
    let cache = dir.path().join("cache");
    let read = |name: &str| restore_through(&cache, &store, &index, &dir.path().join(name), &data);
    read("first.img");
    let cached = chunk_files(&cache);
    assert_eq!(
        cached.len(),
        chunk_files(&store).len() - 1,
        "all but the zero chunk"
    );
    // Damage every cached copy: the restore is still right, silently, and the copies are
    // replaced by good ones.
    for file in &cached {
        std::fs::write(file, b"damaged").unwrap();
    }
    let said = read("second.img");
    assert!(said.is_empty(), "{said}");
    for file in &cached {
        assert_eq!(
            std::fs::read(file).unwrap(),
            std::fs::read(store.join(file.strip_prefix(&cache).unwrap())).unwrap()
        );
    }
    // Then the store can go: the cache alone serves the image.
    std::fs::rename(store.join(".chunks"), dir.path().join("moved")).unwrap();
    std::fs::create_dir(store.join(".chunks")).unwrap();
    read("third.img");
    // The size takes the same suffixes as every size option, and a bad one is a usage error.
    let out = cairn(&[
        "cat",
        "--store",
        s(&store),
        "--disk-cache",
        s(&cache),
        "--disk-cache-size",
        "12XB",
        s(&index),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_reading_command_reads_through_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(3);
    let (store, index) = backed_up(dir.path(), "disk", &data);
    let chunks = chunk_files(&store).len() - 1; // all but the zero chunk
    let cached = |name: &str| {
        let folder = dir.path().join(name);
        if folder.join(".chunks").is_dir() {
            chunk_files(&folder).len()
        } else {
            0
        }
    };
    let with_cache = |command: &str, name: &str, extra: &[&str]| {
        let folder = dir.path().join(name);
        let mut args = vec![
            command,
            "-q",
            "--store",
            s(&store),
            "--disk-cache",
            s(&folder),
        ];
        args.extend_from_slice(extra);
        args.push(s(&index));
        cairn(&args)
    };
    let output = dir.path().join("out.img");
    ok(&cairn(&[
        "restore",
        "-q",
        "--store",
        s(&store),
        "--disk-cache",
        s(&dir.path().join("restore")),
        s(&index),
        s(&output),
    ]));
    assert!(std::fs::read(&output).unwrap() == data);
    let out = with_cache("cat", "cat", &[]);
    assert!(ok(&out).stdout == data);
    let out = with_cache("verify", "verify", &[]);
    ok(&out);
    for name in ["restore", "cat"] {
        assert_eq!(cached(name), chunks, "{name}");
    }
    // verify checks the zero chunk too.
    assert_eq!(cached("verify"), chunks + 1);
    let out = with_cache("read", "read", &["--offset", "0", "--length", "4K"]);
    assert!(ok(&out).stdout == data[..4096]);
    // The chunk read, and whatever readahead fetched behind it.
    assert!((1..=chunks).contains(&cached("read")), "{}", cached("read"));
    // serve-nbd takes it too (it is only parsed here: the NBD tests read through a server).
    let out = cairn(&[
        "serve-nbd",
        "--store",
        s(&store),
        "--disk-cache-size",
        "lots",
        s(&index),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`lots` is not a size"));
}

/// Every file under `folder` with its size and contents' length, sorted: what "intact"
/// compares.
fn listing(folder: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walk(folder)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_store_given_as_the_disk_cache_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(2);
    let (store, index) = backed_up(dir.path(), "disk", &data);
    // Another datastore of 64 chunks, given where the cache goes: the natural way to say
    // "cache in my local datastore", which once lost most of its chunks to eviction.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (datastore, _) = backed_up(&other, "big", &random_bytes(64 << 20));
    assert_eq!(chunk_files(&datastore).len(), 64);
    // A casync store and a folder of someone's files too.
    let castr = dir.path().join("default.castr");
    ok(&cairn(&[
        "backup",
        "-q",
        "--store",
        &format!("castr:{}", s(&castr)),
        "--format",
        "caibx",
        s(&dir.path().join("disk.img")),
        s(&dir.path().join("disk.caibx")),
    ]));
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("thesis.tex"), b"chapter one").unwrap();
    for (folder, words) in [
        (&datastore, "holds a PBS datastore"),
        (&castr, "holds a casync store"),
        (&home, "is not empty"),
    ] {
        let before = listing(folder);
        let out = cairn(&[
            "verify",
            "--store",
            &format!("pbs:{}", s(&store)),
            "--disk-cache",
            s(folder),
            "--disk-cache-size",
            "4MiB",
            s(&index),
        ]);
        let said = failed_with(&out, 2, words);
        assert!(said.contains("not a disk cache of cairn"), "{said}");
        assert!(listing(folder) == before, "{} changed", folder.display());
    }
    assert_eq!(chunk_files(&datastore).len(), 64);
}

#[test]
fn a_disk_cache_in_use_is_shared_one_process_fills_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(2);
    let (store, index) = backed_up(dir.path(), "disk", &data);
    let cache = dir.path().join("cache");
    let restore_through_cache =
        |name: &str| restore_through(&cache, &store, &index, &dir.path().join(name), &data);
    // A server holds the cache while it runs.
    let mut server = cairn_command(&[
        "serve-http",
        "--store",
        s(&store),
        "--disk-cache",
        s(&cache),
        "--listen",
        "127.0.0.1:0",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stderr.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    assert!(banner.contains("serving"), "{banner}");
    // A restore beside it reads through, keeps nothing, and says so.
    let said = restore_through_cache("beside.img");
    assert!(
        said.contains("another cairn is using the disk cache"),
        "{said}"
    );
    assert!(!cache.join(".chunks").exists());
    // Once the server is gone (even killed), the next one owns the cache and fills it.
    server.kill().unwrap();
    server.wait().unwrap();
    let said = restore_through_cache("after.img");
    assert!(said.is_empty(), "{said}");
    assert_eq!(chunk_files(&cache).len(), chunk_files(&store).len() - 1);
}
