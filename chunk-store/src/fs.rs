//! File operations the on-disk stores share: the one rule for whether a chunk file is present,
//! bounded reads, atomic and durable inserts, touching, syncing and listings.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, from_hex};
use crate::store::{PutOutcome, SyncLevel};

/// The largest chunk file read: the largest encoded chunk cairn accepts.
pub(crate) const MAX_CHUNK_FILE: u64 = crate::source::MAX_ENCODED_CHUNK;

/// The one rule for "present", used by every path of every disk store (`get`, `contains`,
/// `touch`, `put`, listings): a regular file at least `min_len` bytes long, `min_len` being the
/// shortest complete chunk file of the store's encoding. A file that is empty or ends inside its
/// header was torn by a crash: it counts as absent, and the next insert replaces it.
pub(crate) fn is_complete(meta: &Metadata, min_len: u64) -> bool {
    meta.is_file() && meta.len() >= min_len.max(1)
}

/// Whether a complete chunk file is at `path` (see [`is_complete`]).
pub(crate) fn chunk_file_present(path: &Path, min_len: u64) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(meta) => Ok(is_complete(&meta, min_len)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The length of the chunk file at `path`, or `None` if none is present (see
/// [`is_complete`]).
pub(crate) fn chunk_file_len(path: &Path, min_len: u64) -> io::Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(is_complete(&meta, min_len).then_some(meta.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The whole chunk file, or `None` if none is present (see [`is_complete`]). Files over
/// [`MAX_CHUNK_FILE`] are refused before reading, so a damaged size can never make us allocate
/// without bound.
pub(crate) fn read_chunk_file(path: &Path, min_len: u64) -> io::Result<Option<Vec<u8>>> {
    // Non-blocking, so that a FIFO put where a chunk should be is refused below instead of
    // waiting forever for a writer; regular files ignore the flag.
    let opened = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        // Something else occupies the chunk's name: not a torn chunk, a damaged store.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if !is_complete(&meta, min_len) {
        return Ok(None);
    }
    let len = meta.len();
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

/// Marks a present chunk file as used now by setting its access time (its modification time is
/// left alone), as PBS does for a chunk a new backup references: PBS's garbage collection
/// removes chunks whose access time is older than its cutoff. Returns whether the chunk is
/// present; a failure to touch a present chunk is an error, since an untouched chunk may be
/// swept while a new index names it.
pub(crate) fn touch_chunk_file(path: &Path, min_len: u64) -> io::Result<bool> {
    if !chunk_file_present(path, min_len)? {
        return Ok(false);
    }
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    };
    match rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) => Ok(true),
        // Removed between the check and the touch: absent after all.
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (`<name>.tmp_<random>`,
/// created exclusively), then linked into place. Linking fails if another writer got there
/// first, which makes that a duplicate, so two concurrent inserts of one chunk are safe and
/// exactly one reports [`PutOutcome::Inserted`]. A chunk already present is touched instead
/// (see [`touch_chunk_file`]); a torn file (see [`is_complete`]) is replaced.
///
/// With [`SyncLevel::File`], the chunk file is fsynced before it appears, and its folder (and
/// the parent of a folder created for it) after. Every sync error is returned.
pub(crate) fn insert_chunk_file(
    path: &Path,
    bytes: &[u8],
    min_len: u64,
    sync: SyncLevel,
) -> io::Result<PutOutcome> {
    if touch_chunk_file(path, min_len)? {
        return Ok(PutOutcome::AlreadyPresent);
    }
    let durable = sync == SyncLevel::File;
    if let Some(folder) = path.parent() {
        ensure_folder(folder, durable)?;
    }
    let temporary = temporary_path(path);
    let written = write_temporary(&temporary, bytes, durable);
    let outcome = written.and_then(|()| match fs::hard_link(&temporary, path) {
        Ok(()) => Ok(PutOutcome::Inserted),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if touch_chunk_file(path, min_len)? {
                Ok(PutOutcome::AlreadyPresent)
            } else {
                // A torn file: replace it.
                fs::rename(&temporary, path).map(|()| PutOutcome::Inserted)
            }
        }
        // Filesystems without hard links: a rename is atomic too, it just cannot tell who won.
        Err(_) => fs::rename(&temporary, path).map(|()| PutOutcome::Inserted),
    });
    let _ = fs::remove_file(&temporary);
    let outcome = outcome?;
    if durable
        && outcome == PutOutcome::Inserted
        && let Some(folder) = path.parent()
    {
        sync_folder(folder)?;
    }
    Ok(outcome)
}

/// Creates `folder` if needed (with its parents). If `durable` and this call created it, its
/// parent is fsynced so the new folder survives a crash.
fn ensure_folder(folder: &Path, durable: bool) -> io::Result<()> {
    match fs::create_dir(folder) {
        Ok(()) => {
            if durable && let Some(parent) = folder.parent() {
                sync_folder(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The store's own folder is gone or was never made: make the whole path.
            fs::create_dir_all(folder)?;
            if durable {
                for ancestor in folder.ancestors().skip(1).take(2) {
                    sync_folder(ancestor)?;
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// fsyncs a folder, so the entries made in it survive a crash.
pub(crate) fn sync_folder(folder: &Path) -> io::Result<()> {
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    File::open(folder)?.sync_all()
}

/// One `syncfs(2)` of the filesystem that holds `path`: every file written on it so far reaches
/// stable storage.
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
    let folder = File::open(path)?;
    rustix::fs::syncfs(&folder)?;
    Ok(())
}

/// A name beside `path` for a temporary of it (random, so concurrent writers never meet).
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    let suffix = crate::digest::to_hex(&random);
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

/// The digests of chunk files present in the prefix folders under `base`: names that are
/// exactly 64 hex digits followed by `suffix`, whose files are complete (see [`is_complete`]).
/// Temporary files of any tool, `.bad` files, torn files and strays are skipped.
pub(crate) fn list_chunk_files(base: &Path, suffix: &str, min_len: u64) -> io::Result<Vec<Digest>> {
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
                && chunk_file_present(&entry.path(), min_len)?
            {
                digests.push(digest);
            }
        }
    }
    digests.sort_unstable();
    Ok(digests)
}
