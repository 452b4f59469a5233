//! A casync chunk store (`.castr`) on local disk: `<base>/<first 4 hex>/<hex id>.cacnk`, or
//! `<hex id>` with no suffix for an uncompressed chunk.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::{Digest, to_hex};
use crate::error::{Location, Result, StoreError};
use crate::fs::{
    chunk_file_len, chunk_file_present, insert_chunk_file, list_chunk_files, read_chunk_file,
    touch_chunk_file,
};
use crate::pbs::{blocking, off_workers, sync_store};
use crate::store::{
    ChunkEncoding, ChunkStat, ChunkStore, EncodedChunk, LocalChunks, PutOutcome, SyncLevel,
};

/// The shortest complete compressed chunk file: the smallest zstd frame (4-byte magic, 2-byte
/// frame header, 3-byte block header); xz and gzip streams are longer. Shorter files were torn.
const MIN_COMPRESSED_FILE: u64 = 9;
/// An uncompressed chunk file is the chunk itself, which is never empty.
const MIN_UNCOMPRESSED_FILE: u64 = 1;

/// A casync `.castr` store on local disk.
///
/// Reads compressed (`.cacnk`) and uncompressed chunks; writes zstd `.cacnk` files atomically,
/// as durable as the [`SyncLevel`] says. Temporary files of casync (`<id>.<hex>.tmp`), desync
/// (`.tmp-cacnk*`) and cairn are never taken for chunks, nor are torn files (shorter than the
/// smallest complete chunk file), which the next insert replaces.
#[derive(Debug, Clone)]
pub struct CastrStore {
    base: PathBuf,
    name: Arc<str>,
    sync: SyncLevel,
}

impl CastrStore {
    /// Opens the store folder at `base`.
    ///
    /// # Errors
    /// [`StoreError::Store`] if `base` is not a folder.
    pub fn open(base: impl AsRef<Path>) -> Result<Self> {
        let store = Self::at(base.as_ref());
        match std::fs::metadata(&store.base) {
            Ok(meta) if meta.is_dir() => Ok(store),
            Ok(_) => Err(store.problem("is not a casync store: not a folder", None)),
            Err(e) => Err(store.problem("is not a casync store", Some(e))),
        }
    }

    /// Creates the store folder at `base` if needed and opens it.
    ///
    /// # Errors
    /// [`StoreError::Store`] if the folder cannot be created.
    pub fn create(base: impl AsRef<Path>) -> Result<Self> {
        let store = Self::at(base.as_ref());
        std::fs::create_dir_all(&store.base)
            .map_err(|e| store.problem("cannot create the store", Some(e)))?;
        Ok(store)
    }

    fn at(base: &Path) -> Self {
        Self {
            base: base.to_path_buf(),
            name: Arc::from(format!("castr:{}", base.display())),
            sync: SyncLevel::default(),
        }
    }

    fn problem(&self, problem: &str, source: Option<io::Error>) -> StoreError {
        StoreError::store(&self.name, problem, source)
    }

    /// How durable inserts are (see [`SyncLevel`]; [`SyncLevel::Filesystem`] by default).
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

    /// Whether `check` holds for the compressed or the uncompressed file of `digest` (tried in
    /// that order), off the async workers.
    async fn either_file(
        &self,
        digest: &Digest,
        check: fn(&Path, u64) -> io::Result<bool>,
    ) -> io::Result<bool> {
        let files = self.chunk_files(digest);
        blocking(move || {
            for (path, min_len) in &files {
                if check(path, *min_len)? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
    }

    /// Both places chunk `digest` may be, with the shortest complete file of each.
    fn chunk_files(&self, digest: &Digest) -> [(PathBuf, u64); 2] {
        [
            (self.chunk_path(digest), MIN_COMPRESSED_FILE),
            (self.uncompressed_chunk_path(digest), MIN_UNCOMPRESSED_FILE),
        ]
    }

    /// Chunk `digest`, compressed or not, read on this thread.
    fn read_chunk(&self, digest: &Digest) -> Result<EncodedChunk> {
        let compressed = self.chunk_path(digest);
        let read = read_chunk_file(&compressed, MIN_COMPRESSED_FILE).and_then(|found| {
            if let Some(bytes) = found {
                return Ok(Some((
                    ChunkEncoding::CasyncCompressed,
                    bytes,
                    compressed.clone(),
                )));
            }
            let plain = self.uncompressed_chunk_path(digest);
            let found = read_chunk_file(&plain, MIN_UNCOMPRESSED_FILE)?;
            Ok(found.map(|bytes| (ChunkEncoding::CasyncUncompressed, bytes, plain)))
        });
        match read {
            Ok(Some((encoding, bytes, path))) => Ok(EncodedChunk {
                encoding,
                bytes,
                location: Location::Path(path),
            }),
            Ok(None) => Err(StoreError::missing(
                &self.name,
                digest,
                Location::Path(compressed),
            )),
            Err(source) => Err(StoreError::read(
                &self.name,
                digest,
                Location::Path(compressed),
                source,
            )),
        }
    }

    /// The store's folder.
    #[must_use]
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Where the compressed chunk `digest` lives.
    #[must_use]
    pub fn chunk_path(&self, digest: &Digest) -> PathBuf {
        let hex = to_hex(digest);
        self.base.join(&hex[..4]).join(format!("{hex}.cacnk"))
    }

    /// Where an uncompressed chunk `digest` would live.
    #[must_use]
    pub fn uncompressed_chunk_path(&self, digest: &Digest) -> PathBuf {
        let hex = to_hex(digest);
        self.base.join(&hex[..4]).join(hex)
    }

    /// Every chunk in the store, compressed or not (skipping temporary files), sorted.
    ///
    /// # Errors
    /// [`StoreError::Store`] if a folder cannot be listed.
    pub fn digests(&self) -> Result<Vec<Digest>> {
        let mut all = list_chunk_files(&self.base, ".cacnk", MIN_COMPRESSED_FILE)
            .and_then(|mut compressed| {
                compressed.extend(list_chunk_files(&self.base, "", MIN_UNCOMPRESSED_FILE)?);
                Ok(compressed)
            })
            .map_err(|e| self.problem("cannot list the chunks", Some(e)))?;
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }
}

#[async_trait::async_trait]
impl ChunkStore for CastrStore {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn encoding(&self) -> ChunkEncoding {
        ChunkEncoding::CasyncCompressed
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        let (store, digest) = (self.clone(), *digest);
        off_workers(&self.name, move || store.read_chunk(&digest)).await
    }

    async fn stat(&self, digest: &Digest) -> Result<ChunkStat> {
        let files = self.chunk_files(digest);
        let found = blocking(move || {
            let encodings = [
                ChunkEncoding::CasyncCompressed,
                ChunkEncoding::CasyncUncompressed,
            ];
            for ((path, min_len), encoding) in files.iter().zip(encodings) {
                if let Some(len) = chunk_file_len(path, *min_len)? {
                    return Ok(Some(ChunkStat::new(encoding, len)));
                }
            }
            Ok(None)
        })
        .await;
        let location = Location::Path(self.chunk_path(digest));
        match found {
            Ok(Some(stat)) => Ok(stat),
            Ok(None) => Err(StoreError::missing(&self.name, digest, location)),
            Err(source) => Err(StoreError::read(&self.name, digest, location, source)),
        }
    }

    fn local(&self) -> Option<&dyn LocalChunks> {
        Some(self)
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        let [(path, min_len), (plain, plain_min)] = self.chunk_files(digest);
        let write_path = path.clone();
        let sync = self.sync;
        blocking(move || {
            // An uncompressed copy counts as the chunk: touch it instead of adding another.
            if touch_chunk_file(&plain, plain_min)? {
                return Ok(PutOutcome::AlreadyPresent);
            }
            insert_chunk_file(&write_path, &encoded, min_len, sync)
        })
        .await
        .map_err(|source| StoreError::write(&self.name, digest, Location::Path(path), source))
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        let location = Location::Path(self.chunk_path(digest));
        self.either_file(digest, chunk_file_present)
            .await
            .map_err(|source| StoreError::read(&self.name, digest, location, source))
    }

    async fn touch(&self, digest: &Digest) -> Result<bool> {
        let location = Location::Path(self.chunk_path(digest));
        self.either_file(digest, touch_chunk_file)
            .await
            .map_err(|source| StoreError::touch(&self.name, digest, location, source))
    }

    async fn sync(&self) -> Result<()> {
        sync_store(&self.name, &self.base, self.sync).await
    }
}

impl LocalChunks for CastrStore {
    fn get_blocking(&self, digest: &Digest) -> Result<EncodedChunk> {
        self.read_chunk(digest)
    }
}
