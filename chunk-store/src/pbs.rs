//! A PBS datastore on local disk: chunks are DataBlobs at `<base>/.chunks/XXXX/<hex digest>`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blob::BLOB_HEADER_SIZE;
use crate::digest::{Digest, to_hex};
use crate::error::{Location, Result, StoreError};
use crate::fs::{
    chunk_file_len, chunk_file_present, insert_chunk_file, list_chunk_files, read_chunk_file,
    sync_filesystem, touch_chunk_file,
};
use crate::store::{
    ChunkEncoding, ChunkStat, ChunkStore, EncodedChunk, LocalChunks, PutOutcome, SyncLevel,
};

/// The shortest complete chunk file: a blob header. Shorter files were torn by a crash.
const MIN_CHUNK_FILE: u64 = BLOB_HEADER_SIZE as u64;

/// A PBS datastore's chunk store on local disk.
///
/// Prefix folders are created when a chunk needs one; a reader needs none of the 65,536 that PBS
/// creates up front. Inserts are atomic (temporary file, then link) and as durable as the
/// [`SyncLevel`] says ([`SyncLevel::Filesystem`] by default). A chunk file shorter than a blob
/// header (torn by a crash) counts as absent and is replaced by the next insert. Chunks found
/// present by an insert or [`touch`](ChunkStore::touch) get their access time updated, as PBS's
/// garbage collection expects.
#[derive(Debug, Clone)]
pub struct PbsDatastore {
    base: PathBuf,
    chunks: PathBuf,
    name: Arc<str>,
    sync: SyncLevel,
}

impl PbsDatastore {
    /// Chunk `digest`, read on this thread.
    fn read_chunk(&self, digest: &Digest) -> Result<EncodedChunk> {
        let path = self.chunk_path(digest);
        let read = read_chunk_file(&path, MIN_CHUNK_FILE);
        let location = Location::Path(path);
        match read {
            Ok(Some(bytes)) => Ok(EncodedChunk {
                encoding: ChunkEncoding::PbsBlob,
                bytes,
                location,
            }),
            Ok(None) => Err(StoreError::missing(&self.name, digest, location)),
            Err(source) => Err(StoreError::read(&self.name, digest, location, source)),
        }
    }

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
    pub fn create(base: impl AsRef<Path>) -> Result<Self> {
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
            sync: SyncLevel::default(),
        }
    }

    fn problem(&self, problem: &str, source: Option<io::Error>) -> StoreError {
        StoreError::store(&self.name, problem, source)
    }

    /// How durable inserts are (see [`SyncLevel`]; [`SyncLevel::Filesystem`] by default). A
    /// crash of the process never exposes a partial chunk at any level; the level is about
    /// crashes of the machine.
    #[must_use]
    pub fn with_sync(mut self, sync: SyncLevel) -> Self {
        self.sync = sync;
        self
    }

    /// The sync level.
    #[must_use]
    pub fn sync_level(&self) -> SyncLevel {
        self.sync
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
        list_chunk_files(&self.chunks, "", MIN_CHUNK_FILE)
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
        let (store, digest) = (self.clone(), *digest);
        off_workers(&self.name, move || store.read_chunk(&digest)).await
    }

    async fn stat(&self, digest: &Digest) -> Result<ChunkStat> {
        let path = self.chunk_path(digest);
        let check = path.clone();
        let found = blocking(move || chunk_file_len(&check, MIN_CHUNK_FILE)).await;
        match found {
            Ok(Some(len)) => Ok(ChunkStat::new(ChunkEncoding::PbsBlob, len)),
            Ok(None) => Err(StoreError::missing(
                &self.name,
                digest,
                Location::Path(path),
            )),
            Err(source) => Err(StoreError::read(
                &self.name,
                digest,
                Location::Path(path),
                source,
            )),
        }
    }

    fn local(&self) -> Option<&dyn LocalChunks> {
        Some(self)
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        let path = self.chunk_path(digest);
        let write_path = path.clone();
        let sync = self.sync;
        blocking(move || insert_chunk_file(&write_path, &encoded, MIN_CHUNK_FILE, sync))
            .await
            .map_err(|source| StoreError::write(&self.name, digest, Location::Path(path), source))
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        let path = self.chunk_path(digest);
        let check = path.clone();
        blocking(move || chunk_file_present(&check, MIN_CHUNK_FILE))
            .await
            .map_err(|source| StoreError::read(&self.name, digest, Location::Path(path), source))
    }

    async fn touch(&self, digest: &Digest) -> Result<bool> {
        let path = self.chunk_path(digest);
        let touch = path.clone();
        blocking(move || touch_chunk_file(&touch, MIN_CHUNK_FILE))
            .await
            .map_err(|source| StoreError::touch(&self.name, digest, Location::Path(path), source))
    }

    async fn sync(&self) -> Result<()> {
        sync_store(&self.name, &self.chunks, self.sync).await
    }
}

/// [`ChunkStore::sync`] of a disk store whose chunks live under `folder`.
pub(crate) async fn sync_store(name: &Arc<str>, folder: &Path, level: SyncLevel) -> Result<()> {
    if level != SyncLevel::Filesystem {
        // `File` synced every chunk as it was written; `None` syncs nothing.
        return Ok(());
    }
    let path = folder.to_path_buf();
    blocking(move || sync_filesystem(&path))
        .await
        .map_err(|source| StoreError::Sync {
            store: Arc::clone(name),
            location: Location::Path(folder.to_path_buf()),
            level: level.name(),
            source,
        })
}

/// Runs a store's blocking `work` off the async workers; outside a runtime, in place.
pub(crate) async fn off_workers<T, F>(store: &Arc<str>, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::store(
                store,
                "a file task failed",
                Some(io::Error::other(join.to_string())),
            ))
        })
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

impl LocalChunks for PbsDatastore {
    fn get_blocking(&self, digest: &Digest) -> Result<EncodedChunk> {
        self.read_chunk(digest)
    }
}
