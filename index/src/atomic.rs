//! Files that appear under their final name complete or not at all.

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IndexError, Origin, Result};

/// A file written under a temporary name beside its destination and renamed over it by
/// [`commit`](AtomicFile::commit), after an fsync. A crash or an error before then leaves no
/// half-written file under the final name; dropping an uncommitted `AtomicFile` removes the
/// temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<BufWriter<File>>,
    temporary: PathBuf,
    destination: PathBuf,
}

impl AtomicFile {
    /// Starts writing a file that will become `destination`.
    ///
    /// # Errors
    /// [`IndexError::Write`] if the temporary file cannot be created.
    pub fn create(destination: impl AsRef<Path>) -> Result<Self> {
        let destination = destination.as_ref().to_path_buf();
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut suffix = [0u8; 6];
        let _ = getrandom::fill(&mut suffix);
        let temporary = destination.with_file_name(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            cairn_digest::Hex(suffix)
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(|source| IndexError::Write {
                file: Origin::file(&destination),
                source,
            })?;
        Ok(Self {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            temporary,
            destination,
        })
    }

    /// The final path.
    #[must_use]
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Flushes, fsyncs and renames the file to its destination (replacing any file there), then
    /// fsyncs the folder so the rename itself survives a crash.
    ///
    /// # Errors
    /// [`IndexError::Write`] if any of those steps fails. If the rename did not happen, the
    /// temporary file is removed and any file at the destination is left as it was.
    pub fn commit(mut self) -> Result<()> {
        let result = self.finish_and_rename();
        result.map_err(|source| IndexError::Write {
            file: Origin::file(&self.destination),
            source,
        })
    }

    /// The temporary file's path (it exists until `commit` or drop).
    #[must_use]
    pub fn temporary(&self) -> &Path {
        &self.temporary
    }

    fn finish_and_rename(&mut self) -> io::Result<()> {
        let writer = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("already committed"))?;
        let renamed = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .and_then(|file| file.sync_all())
            .and_then(|()| fs::rename(&self.temporary, &self.destination));
        if let Err(error) = renamed {
            // Nothing reached the destination: the temporary must not outlive the failure.
            let _ = fs::remove_file(&self.temporary);
            return Err(error);
        }
        // The rename itself survives a crash only once the folder is synced; a failure to do
        // so is reported, not ignored.
        let folder = match self.destination.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        File::open(folder)?.sync_all()
    }

    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the file was already committed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer()?.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer()?.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer()?.flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.writer()?.seek(position)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}
