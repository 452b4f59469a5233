//! The decoding layer: verified plaintext out, encoded chunks in. Decoding, hashing and encoding
//! run on blocking threads, at most one per core at a time, so the async workers stay free and
//! both cores work.

use std::sync::Arc;

use crate::blob::{MAX_BLOB_SIZE, decode_blob, encode_blob};
use crate::casync_chunk::{decode_casync_chunk, encode_casync_chunk};
use crate::cpu::CpuLimit;
use crate::digest::Hex;
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{CodecError, Location, Result, StoreError};
use crate::store::{ChunkEncoding, ChunkStore, EncodedChunk, PutOutcome};

/// The most bytes a sound encoding of `plaintext_len` bytes takes in any format cairn reads: a
/// blob's header, or a compressor's worst case on data that does not compress (zstd, xz and
/// gzip all fall back to storing such data with a few bytes per block), with room to spare.
/// A remote store refuses a body over it for a chunk of that length.
#[must_use]
pub const fn max_encoded_len(plaintext_len: usize) -> u64 {
    let len = plaintext_len as u64;
    len + len / 1024 + 4096
}

/// The largest encoded chunk cairn accepts from anywhere: [`max_encoded_len`] of the 128 MiB
/// blob limit.
pub const MAX_ENCODED_CHUNK: u64 = max_encoded_len(MAX_BLOB_SIZE);

/// Decodes `chunk` to at most `max_len` bytes of plaintext (no digest check).
///
/// # Errors
/// The codec's error for bytes that do not decode.
pub fn decode_chunk(chunk: &EncodedChunk, max_len: usize) -> Result<Vec<u8>, CodecError> {
    match chunk.encoding {
        ChunkEncoding::PbsBlob => decode_blob(&chunk.bytes, max_len),
        ChunkEncoding::CasyncCompressed => decode_casync_chunk(&chunk.bytes, max_len),
        ChunkEncoding::CasyncUncompressed => {
            if chunk.bytes.len() > max_len {
                return Err(CodecError::TooLarge {
                    what: "decoded chunk",
                    size: chunk.bytes.len() as u64,
                    limit: max_len as u64,
                });
            }
            Ok(chunk.bytes.clone())
        }
    }
}

/// Encodes `plaintext` the way a store of `encoding` keeps it.
///
/// # Errors
/// [`CodecError::TooLarge`] over 128 MiB.
pub fn encode_chunk(plaintext: &[u8], encoding: ChunkEncoding) -> Result<Vec<u8>, CodecError> {
    if plaintext.len() > MAX_BLOB_SIZE {
        return Err(CodecError::TooLarge {
            what: "chunk",
            size: plaintext.len() as u64,
            limit: MAX_BLOB_SIZE as u64,
        });
    }
    match encoding {
        ChunkEncoding::PbsBlob => encode_blob(plaintext),
        ChunkEncoding::CasyncCompressed => encode_casync_chunk(plaintext),
        ChunkEncoding::CasyncUncompressed => Ok(plaintext.to_vec()),
    }
}

/// Why one read failed: the chunk's bytes are wrong (a store with another copy may help), or
/// anything else (a missing chunk, an unreadable store, a length the caller got wrong).
enum Failure {
    BadChunk(StoreError),
    Other(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Self::BadChunk(error) | Self::Other(error) => error,
        }
    }
}

/// How many times one read asks a store again after rejecting what it gave.
const MAX_REJECTS: usize = 8;

/// Verified chunks from a [`ChunkStore`]: the only way plaintext leaves this crate.
///
/// [`read`](ChunkSource::read) fetches, decodes and checks that the plaintext has the requested
/// digest (SHA-256, or SHA-512/256 for casync indexes that say so) and the expected length.
/// [`write`](ChunkSource::write) hashes, encodes and stores.
#[derive(Debug, Clone)]
pub struct ChunkSource {
    store: Arc<dyn ChunkStore>,
    algorithm: DigestAlgorithm,
    cpu: CpuLimit,
    key: Key,
}

/// The encryption key of a source, when the crate has encryption.
#[cfg(feature = "crypto")]
type Key = Option<Arc<crate::crypt::CryptKey>>;
#[cfg(not(feature = "crypto"))]
type Key = Option<std::convert::Infallible>;

/// Decodes `chunk`, decrypting with `key` if there is one.
fn decode_keyed(key: &Key, chunk: &EncodedChunk, max_len: usize) -> Result<Vec<u8>, CodecError> {
    #[cfg(feature = "crypto")]
    if let Some(key) = key
        && chunk.encoding == ChunkEncoding::PbsBlob
    {
        return key.decrypt(&chunk.bytes, max_len);
    }
    let _ = key;
    decode_chunk(chunk, max_len)
}

/// What decoding an encoded chunk gave: the plaintext and its digest (`None` if its length is
/// not the expected one), or the codec's error; whether the chunk is sound all the same (a
/// length that does not fit may be the caller's); and where the chunk came from.
type Verified = (
    Result<(Vec<u8>, Option<Digest>), CodecError>,
    bool,
    Location,
);

/// Decodes `encoded` to `expected_len` bytes and hashes the plaintext with `algorithm`.
fn verify(
    key: &Key,
    encoded: &EncodedChunk,
    algorithm: DigestAlgorithm,
    expected_len: usize,
    wanted: &Digest,
) -> Verified {
    let decoded = decode_keyed(key, encoded, expected_len).map(|plaintext| {
        let actual = (plaintext.len() == expected_len).then(|| algorithm.digest(&plaintext));
        (plaintext, actual)
    });
    // A length that does not fit may be the caller's (a wrong length in an index): the chunk is
    // sound if, decoded whole, it has its digest.
    let sound = matches!(decoded, Ok((_, None)) | Err(CodecError::TooLarge { .. }))
        && decode_keyed(key, encoded, MAX_BLOB_SIZE)
            .is_ok_and(|whole| algorithm.digest(&whole) == *wanted);
    (decoded, sound, encoded.location.clone())
}

/// `then` with the plaintext if `verified` is chunk `wanted` (its digest and length), else what
/// was found and `then` unused.
fn finish<R, F: FnOnce(Vec<u8>) -> R>(
    verified: Verified,
    wanted: &Digest,
    then: F,
) -> std::result::Result<R, (Verified, F)> {
    match verified {
        (Ok((plaintext, Some(actual))), _, _) if actual == *wanted => Ok(then(plaintext)),
        other => Err((other, then)),
    }
}

/// What is wrong with chunk `digest` of `store`, which `verify` did not find sound.
fn failure_of(
    store: &Arc<str>,
    digest: &Digest,
    expected_len: usize,
    verified: Verified,
) -> Failure {
    let (decoded, sound, location) = verified;
    let store = Arc::clone(store);
    let failure = |error| {
        if sound {
            Failure::Other(error)
        } else {
            Failure::BadChunk(error)
        }
    };
    match decoded {
        Err(source) => failure(StoreError::Corrupt {
            store,
            digest: Hex(*digest),
            location,
            source,
        }),
        Ok((plaintext, None)) => failure(StoreError::LengthMismatch {
            store,
            digest: Hex(*digest),
            location,
            expected: expected_len as u64,
            actual: plaintext.len() as u64,
        }),
        Ok((_, Some(actual))) => Failure::BadChunk(StoreError::DigestMismatch {
            store,
            digest: Hex(*digest),
            location,
            actual: Hex(actual),
        }),
    }
}

/// How far one blocking read of a local store got.
enum Step<R, F> {
    /// Read and verified: `then`'s result, or what was wrong and `then` unused.
    Checked(std::result::Result<R, (Verified, F)>),
    /// The store could not give the chunk.
    Unread(StoreError, F),
    /// The store has no blocking path.
    NoBlockingPath(F),
}

/// Encodes `plaintext` for `encoding`, encrypting with `key` if there is one.
fn encode_keyed(
    key: &Key,
    plaintext: &[u8],
    encoding: ChunkEncoding,
) -> Result<Vec<u8>, CodecError> {
    #[cfg(feature = "crypto")]
    if let Some(key) = key {
        return match encoding {
            ChunkEncoding::PbsBlob => key.encrypt(plaintext),
            _ => Err(CodecError::NotEncryptable),
        };
    }
    let _ = key;
    encode_chunk(plaintext, encoding)
}

impl ChunkSource {
    /// Chunks of `store` whose digests use `algorithm`, decoded on at most one blocking thread
    /// per core.
    #[must_use]
    pub fn new(store: Arc<dyn ChunkStore>, algorithm: DigestAlgorithm) -> Self {
        Self::with_cpu(store, algorithm, CpuLimit::per_core())
    }

    /// Like [`new`](ChunkSource::new), with at most `threads` decoding at once (at least 1).
    #[must_use]
    pub fn with_cpu_limit(
        store: Arc<dyn ChunkStore>,
        algorithm: DigestAlgorithm,
        threads: usize,
    ) -> Self {
        Self::with_cpu(store, algorithm, CpuLimit::threads(threads))
    }

    /// Like [`new`](ChunkSource::new), decoding under `cpu`, a limit it may share with other
    /// sources and with a chunk server.
    #[must_use]
    pub fn with_cpu(store: Arc<dyn ChunkStore>, algorithm: DigestAlgorithm, cpu: CpuLimit) -> Self {
        Self {
            store,
            algorithm,
            cpu,
            key: None,
        }
    }

    /// The limit this source decodes and encodes under.
    #[must_use]
    pub fn cpu_limit(&self) -> &CpuLimit {
        &self.cpu
    }

    /// Chunks encrypted with `key`, as PBS's client encrypts them: reads decrypt (plain blobs
    /// still decode), writes encrypt, and digests are the key's
    /// ([`CryptKey::digest_algorithm`](crate::CryptKey::digest_algorithm)).
    #[cfg(feature = "crypto")]
    #[must_use]
    pub fn with_key(mut self, key: Arc<crate::crypt::CryptKey>) -> Self {
        self.algorithm = key.digest_algorithm();
        self.key = Some(key);
        self
    }

    /// The store underneath.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ChunkStore> {
        &self.store
    }

    /// The digest algorithm.
    #[must_use]
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The plaintext of chunk `digest`, which must be `expected_len` bytes long.
    ///
    /// # Errors
    /// [`StoreError::Missing`] or [`StoreError::Read`] from the store;
    /// [`StoreError::Corrupt`] (its source the [`CodecError`](crate::CodecError)), [`StoreError::LengthMismatch`] or
    /// [`StoreError::DigestMismatch`] for a chunk that is there but wrong;
    /// [`StoreError::TooLarge`] for an expected length over 128 MiB;
    /// [`StoreError::DecodeTask`] if decoding panicked.
    ///
    /// A chunk that fails verification is [rejected](ChunkStore::reject): a store with another
    /// copy to give (a disk tier, a chain) is asked again, a few times at most.
    pub async fn read(&self, digest: &Digest, expected_len: usize) -> Result<Vec<u8>> {
        self.read_then(digest, expected_len, |plaintext| plaintext)
            .await
    }

    /// [`read`](ChunkSource::read), then `then` with the verified plaintext, on the thread that
    /// verified it: for a reader that consumes a chunk at once (a restore writes it at its
    /// offset), one thread does it all. `then` runs once, and only on a sound chunk.
    ///
    /// # Errors
    /// As [`read`](ChunkSource::read).
    pub async fn read_then<R, F>(&self, digest: &Digest, expected_len: usize, then: F) -> Result<R>
    where
        F: FnOnce(Vec<u8>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let mut then = then;
        let mut first_bad: Option<StoreError> = None;
        for _ in 0..MAX_REJECTS {
            match self.read_once(digest, expected_len, then).await {
                Ok(done) => return Ok(done),
                Err((Failure::BadChunk(error), Some(unused))) => {
                    if !self.store.reject(digest, &error).await {
                        return Err(error);
                    }
                    first_bad.get_or_insert(error);
                    then = unused;
                }
                // Bad where it was, and nowhere else: the bad copy is the news.
                Err((Failure::Other(error), _)) if error.is_missing() => {
                    return Err(first_bad.unwrap_or(error));
                }
                Err((failure, _)) => return Err(failure.into_error()),
            }
        }
        self.read_once(digest, expected_len, then)
            .await
            .map_err(|(failure, _)| failure.into_error())
    }

    /// One fetch, decode and check, then `then`; on a failure, `then` comes back unless it was
    /// lost with a decoding task that panicked.
    async fn read_once<R, F>(
        &self,
        digest: &Digest,
        expected_len: usize,
        then: F,
    ) -> std::result::Result<R, (Failure, Option<F>)>
    where
        F: FnOnce(Vec<u8>) -> R + Send + 'static,
        R: Send + 'static,
    {
        if expected_len > MAX_BLOB_SIZE {
            let error = StoreError::TooLarge {
                what: "expected chunk length",
                size: expected_len as u64,
                limit: MAX_BLOB_SIZE as u64,
            };
            return Err((Failure::Other(error), Some(then)));
        }
        let algorithm = self.algorithm;
        let wanted = *digest;
        let key = self.key.clone();
        // A local store is read on the decoding thread: one hand-off per chunk, not two.
        let step = if self.store.local().is_some() {
            let store = Arc::clone(&self.store);
            self.on_cpu(digest, move || {
                Ok(
                    match store.local().map(|local| local.get_blocking(&wanted)) {
                        Some(Ok(encoded)) => Step::Checked(finish(
                            verify(&key, &encoded, algorithm, expected_len, &wanted),
                            &wanted,
                            then,
                        )),
                        Some(Err(error)) => Step::Unread(error, then),
                        None => Step::NoBlockingPath(then),
                    },
                )
            })
            .await
        } else {
            Ok(Step::NoBlockingPath(then))
        };
        let checked = match step {
            Ok(Step::Checked(checked)) => checked,
            Ok(Step::Unread(error, then)) => return Err((Failure::Other(error), Some(then))),
            Err(error) => return Err((Failure::Other(error), None)),
            Ok(Step::NoBlockingPath(then)) => {
                let limit = max_encoded_len(expected_len);
                let encoded = match self.store.get_within(digest, limit).await {
                    Ok(encoded) => encoded,
                    // A body too large to be the chunk: bad bytes, which another copy may fix.
                    Err(error) if error.is_bad_chunk() => {
                        return Err((Failure::BadChunk(error), Some(then)));
                    }
                    Err(error) => return Err((Failure::Other(error), Some(then))),
                };
                let key = self.key.clone();
                self.on_cpu(digest, move || {
                    Ok(finish(
                        verify(&key, &encoded, algorithm, expected_len, &wanted),
                        &wanted,
                        then,
                    ))
                })
                .await
                .map_err(|error| (Failure::Other(error), None))?
            }
        };
        match checked {
            Ok(done) => Ok(done),
            Err((verified, then)) => Err((
                failure_of(self.store.name(), digest, expected_len, verified),
                Some(then),
            )),
        }
    }

    /// [`read`](ChunkSource::read) on the calling thread, for a store with a blocking read path
    /// ([`ChunkStore::local`]); `None` for one without. Call it off the async workers, on as
    /// many threads as the caller decides: it does not count against this source's limit of
    /// decoding threads. A bad chunk is reported as found (a local store has no other copy).
    ///
    /// # Errors
    /// As [`read`](ChunkSource::read).
    #[must_use]
    pub fn read_blocking(&self, digest: &Digest, expected_len: usize) -> Option<Result<Vec<u8>>> {
        let local = self.store.local()?;
        if expected_len > MAX_BLOB_SIZE {
            return Some(Err(StoreError::TooLarge {
                what: "expected chunk length",
                size: expected_len as u64,
                limit: MAX_BLOB_SIZE as u64,
            }));
        }
        let encoded = match local.get_blocking(digest) {
            Ok(encoded) => encoded,
            Err(error) => return Some(Err(error)),
        };
        let verified = verify(&self.key, &encoded, self.algorithm, expected_len, digest);
        Some(
            finish(verified, digest, |plaintext| plaintext).map_err(|(verified, _)| {
                failure_of(self.store.name(), digest, expected_len, verified).into_error()
            }),
        )
    }

    /// Hashes, encodes and stores `plaintext`; returns its digest and whether it was new.
    ///
    /// # Errors
    /// [`StoreError::Encode`] for a chunk over 128 MiB, or the store's write error.
    pub async fn write(&self, plaintext: Vec<u8>) -> Result<(Digest, PutOutcome)> {
        self.write_checked(None, plaintext).await
    }

    /// Stores `plaintext` under `digest` after checking that it is its digest.
    ///
    /// # Errors
    /// [`StoreError::DigestMismatch`] if `plaintext` does not hash to `digest`; otherwise as
    /// [`write`](ChunkSource::write).
    pub async fn write_with_digest(
        &self,
        digest: &Digest,
        plaintext: Vec<u8>,
    ) -> Result<PutOutcome> {
        let (_, outcome) = self.write_checked(Some(*digest), plaintext).await?;
        Ok(outcome)
    }

    /// Like [`write`](ChunkSource::write), but asks the store first and encodes only a chunk it
    /// does not have: for backups, where most chunks of a second run are already stored. A
    /// chunk the store has is [touched](ChunkStore::touch), so garbage collection keeps it.
    ///
    /// # Errors
    /// As [`write`](ChunkSource::write), and the store's error from `touch`.
    pub async fn write_new(&self, plaintext: Vec<u8>) -> Result<(Digest, PutOutcome)> {
        let algorithm = self.algorithm;
        let (digest, plaintext) = self
            .on_cpu(&[0; 32], move || {
                Ok((algorithm.digest(&plaintext), plaintext))
            })
            .await?;
        if self.store.touch(&digest).await? {
            return Ok((digest, PutOutcome::AlreadyPresent));
        }
        let encoding = self.store.encoding();
        let store = Arc::clone(self.store.name());
        let key = self.key.clone();
        let encoded = self
            .on_cpu(&digest, move || {
                encode_keyed(&key, &plaintext, encoding).map_err(|source| StoreError::Encode {
                    store,
                    digest: Hex(digest),
                    source,
                })
            })
            .await?;
        let outcome = self.store.put(&digest, encoded).await?;
        Ok((digest, outcome))
    }

    async fn write_checked(
        &self,
        expected: Option<Digest>,
        plaintext: Vec<u8>,
    ) -> Result<(Digest, PutOutcome)> {
        let algorithm = self.algorithm;
        let encoding = self.store.encoding();
        let store = Arc::clone(self.store.name());
        let key = self.key.clone();
        let (digest, encoded) = self
            .on_cpu(&expected.unwrap_or_default(), move || {
                let digest = algorithm.digest(&plaintext);
                if let Some(expected) = expected
                    && expected != digest
                {
                    return Err(StoreError::DigestMismatch {
                        store,
                        digest: Hex(expected),
                        location: Location::Memory,
                        actual: Hex(digest),
                    });
                }
                let encoded = encode_keyed(&key, &plaintext, encoding).map_err(|source| {
                    StoreError::Encode {
                        store,
                        digest: Hex(digest),
                        source,
                    }
                })?;
                Ok((digest, encoded))
            })
            .await?;
        let outcome = self.store.put(&digest, encoded).await?;
        Ok((digest, outcome))
    }

    /// Runs CPU-heavy `work` under this source's [`CpuLimit`].
    async fn on_cpu<T, F>(&self, digest: &Digest, work: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.cpu.run(work).await.unwrap_or_else(|failure| {
            Err(StoreError::DecodeTask {
                store: Arc::clone(self.store.name()),
                digest: Hex(*digest),
                message: failure.describe().to_owned(),
            })
        })
    }
}
