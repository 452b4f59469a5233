//! A PBS datastore on local disk: chunks are DataBlobs at `<base>/.chunks/XXXX/<hex digest>`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::{Digest, to_hex};
use crate::error::{Location, Result, StoreError};
use crate::fs::{chunk_file_exists, insert_chunk_file, list_chunk_files, read_chunk_file};
use crate::store::{ChunkEncoding, ChunkStore, EncodedChunk, EncodedFormat, PutOutcome};

/// A PBS datastore's chunk store on local disk.
///
/// Prefix folders are created when a chunk needs one; a reader needs none of the 65,536 that PBS
/// creates up front. Inserts are atomic (temporary file, then link), optionally fsynced.
#[derive(Debug, Clone)]
pub struct PbsDatastore {
    base: PathBuf,
    chunks: PathBuf,
    name: Arc<str>,
    fsync: bool,
}

impl PbsDatastore {
    /// Opens the datastore at `base`, which must hold a `.chunks` folder.
    ///
    /// # Errors
    /// [`StoreError::Store`] if `base/.chunks` is not a folder.
    pub fn open(base: impl AsRef<Path>) -> Result<Self> {
        let store = Self::at(base.as_ref());
        match std::fs::metadata(&store.chunks) {
            Ok(meta) if meta.is_dir() => Ok(store),
            Ok(_) => Err(store.problem("is not a PBS datastore: .chunks is not a folder", None)),
            Err(e) => {
                Err(store.problem("is not a PBS datastore: it has no .chunks folder", Some(e)))
            }
        }
    }

    /// Creates a datastore at `base` (the folder and its `.chunks`), or opens the one there.
    ///
    /// # Errors
    /// [`StoreError::Store`] if the folders cannot be created.
    pub fn init(base: impl AsRef<Path>) -> Result<Self> {
        let store = Self::at(base.as_ref());
        std::fs::create_dir_all(&store.chunks)
            .map_err(|e| store.problem("cannot create the datastore", Some(e)))?;
        Ok(store)
    }

    fn at(base: &Path) -> Self {
        Self {
            base: base.to_path_buf(),
            chunks: base.join(".chunks"),
            name: Arc::from(format!("pbs:{}", base.display())),
            fsync: false,
        }
    }

    fn problem(&self, problem: &str, source: Option<io::Error>) -> StoreError {
        StoreError::store(&self.name, problem, source)
    }

    /// Whether inserts fsync each chunk before it appears (off by default: a crash of the
    /// process never exposes a partial chunk either way; fsync protects against power loss).
    #[must_use]
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The datastore's folder.
    #[must_use]
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Where chunk `digest` lives.
    #[must_use]
    pub fn chunk_path(&self, digest: &Digest) -> PathBuf {
        let hex = to_hex(digest);
        self.chunks.join(&hex[..4]).join(hex)
    }

    /// Every chunk in the store (skipping temporary and `.bad` files), sorted.
    ///
    /// # Errors
    /// [`StoreError::Store`] if a folder cannot be listed.
    pub fn digests(&self) -> Result<Vec<Digest>> {
        list_chunk_files(&self.chunks, "")
            .map_err(|e| self.problem("cannot list the chunks", Some(e)))
    }
}

#[async_trait::async_trait]
impl ChunkStore for PbsDatastore {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn encoding(&self) -> ChunkEncoding {
        ChunkEncoding::PbsBlob
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        let path = self.chunk_path(digest);
        let read_path = path.clone();
        let read = blocking(move || read_chunk_file(&read_path)).await;
        let location = Location::Path(path);
        match read {
            Ok(Some(bytes)) => Ok(EncodedChunk {
                format: EncodedFormat::PbsBlob,
                bytes,
                location,
            }),
            Ok(None) => Err(StoreError::missing(&self.name, digest, location)),
            Err(source) => Err(StoreError::read(&self.name, digest, location, source)),
        }
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        let path = self.chunk_path(digest);
        let write_path = path.clone();
        let fsync = self.fsync;
        blocking(move || insert_chunk_file(&write_path, &encoded, fsync))
            .await
            .map_err(|source| StoreError::write(&self.name, digest, Location::Path(path), source))
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        let path = self.chunk_path(digest);
        let check = path.clone();
        blocking(move || chunk_file_exists(&check))
            .await
            .map_err(|source| StoreError::read(&self.name, digest, Location::Path(path), source))
    }
}

/// Runs blocking file work off the async workers; outside a runtime, runs it in place.
pub(crate) async fn blocking<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(io::Error::other(format!("file task failed: {join}"))),
    }
}
