//! Where a restore writes, and only there: a FIFO or character device, written in order in
//! place; a block device, written in place at offsets; a regular file, written as a temporary
//! file beside it and renamed over it once complete; standard input, output or error named by
//! a path (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`), written in order through the
//! descriptor itself, never replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek as _, SeekFrom};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ReaderError;

/// An I/O failure on the output `path`, while trying to `action`.
pub(crate) fn output_error(path: &Path, action: &'static str, source: io::Error) -> ReaderError {
    ReaderError::Output {
        path: path.to_path_buf(),
        action,
        source: Arc::new(source),
    }
}

/// A restore's output, classified before anything is written.
#[derive(Debug)]
pub(crate) enum Target {
    /// Standard input, output or error, named by a path: the open descriptor (a duplicate of
    /// it), written in order as `-` is, whatever it is open on. A file behind it (`>> log`) is
    /// appended to as the shell opened it, never replaced.
    Descriptor {
        /// The path given.
        path: PathBuf,
        /// A duplicate of the descriptor.
        file: File,
    },
    /// An existing FIFO or character device: written in order, in place. Not opened yet, since
    /// opening a FIFO waits for its reader.
    Stream {
        /// The path given.
        path: PathBuf,
    },
    /// An existing block device, opened exclusively (so a mounted one is refused) and known to
    /// be large enough.
    Device {
        /// The path given.
        path: PathBuf,
        /// The device, open for writing.
        file: File,
    },
    /// A regular file, new or existing (through any symlinks): the image goes to a temporary
    /// file beside it, renamed over it when complete.
    File {
        /// The final path (symlinks resolved).
        path: PathBuf,
        /// The existing file's metadata, whose mode and owner the new file keeps.
        existing: Option<fs::Metadata>,
    },
}

impl Target {
    /// Classifies `path` for an image of `image_size` bytes. A block device is opened here, so
    /// that one too small or in use is refused before anything is written.
    ///
    /// # Errors
    /// [`ReaderError::OutputKind`] for a folder, a socket or a dangling symlink;
    /// [`ReaderError::DeviceTooSmall`]; [`ReaderError::Output`] for a path that cannot be
    /// examined or a device that cannot be opened.
    pub(crate) fn of(path: &Path, image_size: u64) -> Result<Self, ReaderError> {
        let kind_error = |problem| ReaderError::OutputKind {
            path: path.to_path_buf(),
            problem,
        };
        if let Some(number) = descriptor(path) {
            return descriptor_target(path, number);
        }
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::symlink_metadata(path).is_ok() {
                    return Err(kind_error(
                        "is a symlink to nothing; restore to its target's path or remove it",
                    ));
                }
                return Ok(Self::File {
                    path: path.to_path_buf(),
                    existing: None,
                });
            }
            Err(e) => return Err(output_error(path, "examine it", e)),
        };
        let kind = meta.file_type();
        if kind.is_block_device() {
            let file = open_device(path)?;
            return Ok(Self::Device {
                path: path.to_path_buf(),
                file: check_device_size(path, file, image_size)?,
            });
        }
        if kind.is_fifo() || kind.is_char_device() {
            return Ok(Self::Stream {
                path: path.to_path_buf(),
            });
        }
        if kind.is_dir() {
            return Err(kind_error(
                "is a folder; the output must be a file, a device or a FIFO",
            ));
        }
        if !kind.is_file() {
            return Err(kind_error("is neither a file, a device nor a FIFO"));
        }
        // Through any symlinks to the file itself, so the temporary lies beside it and the
        // rename replaces it, not the link.
        let real = fs::canonicalize(path).map_err(|e| output_error(path, "resolve it", e))?;
        Ok(Self::File {
            path: real,
            existing: Some(meta),
        })
    }
}

/// The descriptor `path` names, if it names one: `/dev/stdin`, `/dev/stdout`, `/dev/stderr`,
/// `/dev/fd/N`, `/proc/self/fd/N`, `/proc/thread-self/fd/N` or `/proc/PID/fd/N` of this
/// process, as given or as a symlink (or a chain of them) leads there. Opening such a path
/// reopens whatever the descriptor is open on, and a rename onto it replaces that: both are
/// wrong for what the user meant, the descriptor.
fn descriptor(path: &Path) -> Option<u32> {
    let own = std::process::id().to_string();
    let mut path = path.to_path_buf();
    // As the kernel, give up on a chain of 40 links.
    for _ in 0..40 {
        let text = path.to_str()?;
        match text {
            "/dev/stdin" => return Some(0),
            "/dev/stdout" => return Some(1),
            "/dev/stderr" => return Some(2),
            _ => {}
        }
        let number = text
            .strip_prefix("/dev/fd/")
            .or_else(|| text.strip_prefix("/proc/self/fd/"))
            .or_else(|| text.strip_prefix("/proc/thread-self/fd/"))
            .or_else(|| {
                let rest = text.strip_prefix("/proc/")?;
                let (pid, rest) = rest.split_once('/')?;
                (pid == own).then_some(rest)?.strip_prefix("fd/")
            });
        if let Some(number) = number.and_then(|n| n.parse().ok()) {
            return Some(number);
        }
        let link = fs::read_link(&path).ok()?;
        path = match path.parent() {
            Some(parent) if link.is_relative() => parent.join(link),
            _ => link,
        };
    }
    None
}

/// The target for descriptor `number`, named by `path`.
fn descriptor_target(path: &Path, number: u32) -> Result<Target, ReaderError> {
    use std::os::fd::AsFd as _;
    let duplicate = match number {
        0 => std::io::stdin().as_fd().try_clone_to_owned(),
        1 => std::io::stdout().as_fd().try_clone_to_owned(),
        2 => std::io::stderr().as_fd().try_clone_to_owned(),
        _ => {
            // Another descriptor cannot be duplicated without unsafe code; a pipe or FIFO
            // behind it is reached by opening the path (that is what a shell's `>(…)` gives),
            // anything else is refused rather than reopened or replaced.
            let meta = fs::metadata(path).map_err(|e| output_error(path, "examine it", e))?;
            let kind = meta.file_type();
            if kind.is_fifo() || kind.is_char_device() {
                return Ok(Target::Stream {
                    path: path.to_path_buf(),
                });
            }
            return Err(ReaderError::OutputKind {
                path: path.to_path_buf(),
                problem: "names an open descriptor other than standard input, output or \
                          error, open on a file or device; give that file's own path, or `-` for \
                          standard output",
            });
        }
    };
    let file = duplicate.map_err(|e| output_error(path, "use the descriptor", e))?;
    Ok(Target::Descriptor {
        path: path.to_path_buf(),
        file: File::from(file),
    })
}

fn open_device(path: &Path) -> Result<File, ReaderError> {
    OpenOptions::new()
        .write(true)
        // On a block device without O_CREAT, O_EXCL means "exclusive": refused while it is
        // mounted or otherwise held.
        .custom_flags(rustix::fs::OFlags::EXCL.bits().cast_signed())
        .open(path)
        .map_err(|e| {
            let busy = e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error());
            output_error(
                path,
                if busy {
                    "open the device for writing (it is mounted or in use)"
                } else {
                    "open the device for writing"
                },
                e,
            )
        })
}

fn check_device_size(path: &Path, mut file: File, image_size: u64) -> Result<File, ReaderError> {
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| output_error(path, "tell the device's size", e))?;
    if size < image_size {
        return Err(ReaderError::DeviceTooSmall {
            path: path.to_path_buf(),
            size,
            image_size,
        });
    }
    Ok(file)
}

/// A temporary file beside the final path, created exclusively under a random name (so it is
/// never a file or symlink that was there), removed on drop unless committed.
#[derive(Debug)]
pub(crate) struct TemporaryFile {
    path: PathBuf,
    destination: PathBuf,
    committed: bool,
}

impl TemporaryFile {
    /// Creates the temporary for `destination`, with the mode (and, where allowed, the owner)
    /// of `existing`.
    ///
    /// # Errors
    /// [`ReaderError::Output`] if it cannot be created.
    pub(crate) fn create(
        destination: &Path,
        existing: Option<&fs::Metadata>,
    ) -> Result<(Self, File), ReaderError> {
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| {
            output_error(
                destination,
                "name a temporary file beside it",
                io::Error::other(e.to_string()),
            )
        })?;
        let suffix = cairn_chunk_store::to_hex(&random);
        let path = destination.with_file_name(format!(".{name}.cairn-{suffix}.tmp"));
        let mut options = OpenOptions::new();
        // create_new is O_CREAT | O_EXCL: it fails on anything already there, a symlink
        // included, and never follows one.
        options
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed());
        if let Some(meta) = existing {
            options.mode(meta.mode() & 0o7777);
        }
        let file = options
            .open(&path)
            .map_err(|e| output_error(destination, "create a temporary file beside it", e))?;
        let temporary = Self {
            path,
            destination: destination.to_path_buf(),
            committed: false,
        };
        if let Some(meta) = existing {
            // The mode above went through the umask; set it exactly, and keep the owner where
            // this user may (only root may give a file away).
            file.set_permissions(meta.permissions())
                .map_err(|e| output_error(&temporary.path, "set its mode", e))?;
            match std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(output_error(&temporary.path, "set its owner", e)),
            }
        }
        Ok((temporary, file))
    }

    /// Moves the complete file into place (after an fsync of it, and of its folder after, if
    /// `fsync`).
    ///
    /// # Errors
    /// [`ReaderError::Output`] if a step fails; the temporary is then removed on drop and the
    /// destination is as it was.
    pub(crate) fn commit(mut self, file: &File, fsync: bool) -> Result<(), ReaderError> {
        if fsync {
            file.sync_all()
                .map_err(|e| output_error(&self.path, "fsync it", e))?;
        }
        fs::rename(&self.path, &self.destination).map_err(|e| {
            output_error(&self.destination, "move the restored image into place", e)
        })?;
        self.committed = true;
        if fsync {
            let folder = match self.destination.parent() {
                Some(folder) if !folder.as_os_str().is_empty() => folder,
                _ => Path::new("."),
            };
            File::open(folder)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| output_error(folder, "fsync the folder", e))?;
        }
        Ok(())
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}
