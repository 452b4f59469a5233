//! File operations the on-disk stores share: bounded reads, atomic inserts, listings.

use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::blob::MAX_BLOB_SIZE;
use crate::digest::{Digest, from_hex};
use crate::store::PutOutcome;

/// The largest chunk file read: a full blob plus the largest header.
pub(crate) const MAX_CHUNK_FILE: u64 = MAX_BLOB_SIZE as u64 + 64;

/// The whole file, or `None` if it does not exist. Files over [`MAX_CHUNK_FILE`] are refused
/// before reading, so a damaged size can never make us allocate without bound.
pub(crate) fn read_chunk_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len > MAX_CHUNK_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("chunk file is {len} bytes, over the {MAX_CHUNK_FILE}-byte limit"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_CHUNK_FILE).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Whether a chunk file exists at `path` (of any length).
pub(crate) fn chunk_file_exists(path: &Path) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `path` holds a usable chunk: an existing, non-empty file.
fn present(path: &Path) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.is_file() && meta.len() > 0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Marks an existing chunk as used now (garbage collection keeps recently touched chunks).
fn touch(path: &Path) {
    let now = SystemTime::now();
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_times(FileTimes::new().set_accessed(now).set_modified(now));
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (`<name>.tmp_<random>`),
/// optionally fsynced, then linked into place. Linking fails if another writer got there first,
/// which makes that a duplicate, so two concurrent inserts of one chunk are safe and exactly one
/// reports [`PutOutcome::Inserted`]. An existing empty file (a torn write of another tool) is
/// replaced.
pub(crate) fn insert_chunk_file(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<PutOutcome> {
    if present(path)? {
        touch(path);
        return Ok(PutOutcome::AlreadyPresent);
    }
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder)?;
    }
    let temporary = temporary_path(path);
    let written = write_temporary(&temporary, bytes, fsync);
    let outcome = written.and_then(|()| match fs::hard_link(&temporary, path) {
        Ok(()) => Ok(PutOutcome::Inserted),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if present(path)? {
                Ok(PutOutcome::AlreadyPresent)
            } else {
                fs::rename(&temporary, path).map(|()| PutOutcome::Inserted)
            }
        }
        // Filesystems without hard links: a rename is atomic too, it just cannot tell who won.
        Err(_) => fs::rename(&temporary, path).map(|()| PutOutcome::Inserted),
    });
    let _ = fs::remove_file(&temporary);
    if outcome.is_ok()
        && fsync
        && let Some(folder) = path.parent()
        && let Ok(dir) = File::open(folder)
    {
        let _ = dir.sync_all();
    }
    outcome
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp_{suffix}"));
    path.with_file_name(name)
}

fn write_temporary(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let mut file = File::options().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// The digests of chunk files in the prefix folders under `base`: names that are exactly 64 hex
/// digits followed by `suffix`. Temporary files of any tool, `.bad` files and strays are skipped.
pub(crate) fn list_chunk_files(base: &Path, suffix: &str) -> io::Result<Vec<Digest>> {
    let mut digests = Vec::new();
    let prefixes = match fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(digests),
        Err(e) => return Err(e),
    };
    for prefix in prefixes {
        let prefix = prefix?;
        let name = prefix.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() != 4 || !prefix.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(prefix.path())? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Some(hex) = file_name.strip_suffix(suffix) else {
                continue;
            };
            if let Some(digest) = from_hex(hex)
                && hex.starts_with(name)
            {
                digests.push(digest);
            }
        }
    }
    digests.sort_unstable();
    Ok(digests)
}
