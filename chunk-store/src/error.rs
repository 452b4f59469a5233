//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::{Digest, Hex};

/// Where a chunk lives in its store: a file, an object key, or memory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A file on disk.
    Path(PathBuf),
    /// A key in an object store or under a URL.
    Key(String),
    /// In memory.
    Memory,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Key(key) => f.write_str(key),
            Self::Memory => f.write_str("memory"),
        }
    }
}

/// The error of a remote store's client (an HTTP or S3 failure), kept as it came.
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong encoding, decoding, storing or fetching a chunk.
///
/// Each variant names the store, the digest and where the chunk is, once; its message says what
/// went wrong at this level, and the cause (the operating system's error, the codec's
/// [`CodecError`]) is its [`source`](std::error::Error::source), not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store has no chunk with this digest.
    #[error("{store}: chunk {digest} is missing (not at {location})")]
    Missing {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// Where it was looked for.
        location: Location,
    },
    /// The chunk exists but could not be read.
    #[error("{store}: cannot read chunk {digest} at {location}")]
    Read {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// Where it is.
        location: Location,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The chunk could not be written.
    #[error("{store}: cannot write chunk {digest} at {location}")]
    Write {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// Where it was going.
        location: Location,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A chunk that is present could not be marked as used (its access time set).
    #[error("{store}: cannot mark chunk {digest} at {location} as used")]
    Touch {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// Where it is.
        location: Location,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Making the store's chunks durable failed.
    #[error("{store}: cannot sync {location} ({level} level)")]
    Sync {
        /// The store.
        store: Arc<str>,
        /// What was being synced.
        location: Location,
        /// The store's sync level.
        level: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The store itself cannot be used (missing folder, not a datastore).
    #[error("{store}: {problem}")]
    Store {
        /// The store.
        store: Arc<str>,
        /// What is wrong, in words.
        problem: String,
        /// The operating system's error, if one caused it.
        #[source]
        source: Option<io::Error>,
    },
    /// A remote store refused the request for lack of permission (HTTP 401 or 403): the
    /// credentials or the bucket policy. Not retried.
    #[error("{store}: access denied to {location}")]
    Denied {
        /// The store.
        store: Arc<str>,
        /// The chunk, if the request was for one.
        digest: Option<Hex<Digest>>,
        /// The bucket and key, or the URL.
        location: Location,
        /// The client's error.
        #[source]
        source: RemoteError,
    },
    /// A remote store did not answer well even after retries: throttling, server errors,
    /// timeouts, a connection or a body cut short.
    #[error("{store}: request for {location} failed")]
    Unavailable {
        /// The store.
        store: Arc<str>,
        /// The chunk, if the request was for one.
        digest: Option<Hex<Digest>>,
        /// The bucket and key, or the URL.
        location: Location,
        /// The client's error (its last attempt).
        #[source]
        source: RemoteError,
    },
    /// A remote store announced or sent a body over the limit for what was asked (larger than
    /// any sound encoding of the chunk, or than an object of its kind may be). Nothing past the
    /// limit was read, and nothing was allocated for the announced size.
    #[error("{store}: {location} is {size} bytes, over the {limit}-byte limit for {what}")]
    Oversized {
        /// The store.
        store: Arc<str>,
        /// Whether the request was for a chunk (whose body is then a bad copy of it).
        chunk: bool,
        /// The bucket and key, or the URL.
        location: Location,
        /// The size announced, or how much had come when it passed the limit.
        size: u64,
        /// The limit.
        limit: u64,
        /// What was asked for: `a chunk of this length`, `an index`.
        what: &'static str,
    },
    /// The chunk's bytes do not decode; the source says why.
    #[error("{store}: chunk {digest} at {location} is corrupt")]
    Corrupt {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// Where it is.
        location: Location,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// The chunk decodes, but to data with another digest.
    #[error("{store}: chunk {digest} at {location} decodes to data whose digest is {actual}")]
    DigestMismatch {
        /// The store.
        store: Arc<str>,
        /// The digest asked for.
        digest: Hex<Digest>,
        /// Where it is.
        location: Location,
        /// The digest of what it decoded to.
        actual: Hex<Digest>,
    },
    /// The chunk decodes to a length other than the one expected.
    #[error("{store}: chunk {digest} at {location} decodes to {actual} bytes, expected {expected}")]
    LengthMismatch {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// Where it is.
        location: Location,
        /// The length expected (from the index).
        expected: u64,
        /// The length found.
        actual: u64,
    },
    /// Decoding ran into a panic or its task was cancelled; nothing was returned.
    #[error("{store}: decoding chunk {digest} failed: {message}")]
    DecodeTask {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// What happened.
        message: String,
    },
    /// A folder given as a disk tier ([`DiskTier`](crate::DiskTier)) that cairn did not make
    /// for one: a datastore, a casync store, or any other folder that is not empty and lacks
    /// the tier's marker file. Nothing in it was touched. A usage error: another folder is
    /// needed.
    #[error("{}: not a disk cache of cairn: {why}; nothing in it was touched", folder.display())]
    ForeignFolder {
        /// The folder.
        folder: PathBuf,
        /// What it holds, and what to do instead.
        why: &'static str,
    },
    /// A fault injected by a test store.
    #[error("{store}: injected fault on chunk {digest}")]
    Injected {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
    },

    /// A length asked of the store is over what it can hold (an expected length or a
    /// plaintext over 128 MiB); nothing was read or written.
    #[error("{what} of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The chunk could not be encoded for the store.
    #[error("{store}: cannot encode chunk {digest}")]
    Encode {
        /// The store.
        store: Arc<str>,
        /// The chunk.
        digest: Hex<Digest>,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
}

/// What is wrong with bytes that were to decode as a chunk (or with a chunk that was to be
/// encoded): the codecs' own errors, about bytes alone. A store wraps them in
/// [`StoreError::Corrupt`] with the store, the digest and the location.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes start with no chunk format cairn knows.
    #[error("unknown chunk format (first bytes {found})")]
    UnknownFormat {
        /// The first bytes, in hex.
        found: String,
    },
    /// The bytes end before their header does.
    #[error("truncated: {len} bytes, the header needs {needed}")]
    Truncated {
        /// The length.
        len: usize,
        /// The header's length.
        needed: usize,
    },
    /// The PBS blob's CRC-32 does not match its payload.
    #[error("CRC-32 mismatch: header {expected:#010x}, payload {actual:#010x}")]
    CrcMismatch {
        /// The CRC in the header.
        expected: u32,
        /// The CRC of the payload.
        actual: u32,
    },
    /// An encrypted PBS blob, read without a key.
    #[error("encrypted chunk ({magic} blob magic): key required")]
    Encrypted {
        /// Which of the two encrypted magics the blob has.
        magic: &'static str,
    },
    /// Encrypted chunks can only be PBS blobs; a casync store cannot hold them.
    #[error("encrypted chunks need a PBS datastore: casync stores have no encrypted format")]
    NotEncryptable,
    /// AES-GCM refused the blob: it was encrypted with another key, or changed since.
    #[error("decryption failed: wrong key or tampered chunk")]
    Decrypt,
    /// The system's random source failed (for an IV).
    #[error("no random bytes for an IV: {0}")]
    Random(String),
    /// Too large to accept: over the 128 MiB blob limit or over the expected decoded length.
    #[error("{what} of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size (a lower bound when decoding stopped early).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The compressed stream is invalid.
    #[error("{codec} stream is invalid")]
    Decompress {
        /// `zstd`, `xz` or `gzip`.
        codec: &'static str,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// Compressing failed.
    #[error("{codec} compression failed")]
    Compress {
        /// `zstd`.
        codec: &'static str,
        /// The compressor's error.
        #[source]
        source: io::Error,
    },
    /// The chunk needs a codec this build left out (a cargo feature).
    #[error("{codec} chunks need the `{feature}` feature of cairn-chunk-store")]
    CodecDisabled {
        /// The codec.
        codec: &'static str,
        /// The feature that enables it.
        feature: &'static str,
    },
}

impl StoreError {
    pub(crate) fn missing(store: &Arc<str>, digest: &Digest, location: Location) -> Self {
        Self::Missing {
            store: Arc::clone(store),
            digest: Hex(*digest),
            location,
        }
    }

    pub(crate) fn read(
        store: &Arc<str>,
        digest: &Digest,
        location: Location,
        source: io::Error,
    ) -> Self {
        Self::Read {
            store: Arc::clone(store),
            digest: Hex(*digest),
            location,
            source,
        }
    }

    pub(crate) fn write(
        store: &Arc<str>,
        digest: &Digest,
        location: Location,
        source: io::Error,
    ) -> Self {
        Self::Write {
            store: Arc::clone(store),
            digest: Hex(*digest),
            location,
            source,
        }
    }

    pub(crate) fn touch(
        store: &Arc<str>,
        digest: &Digest,
        location: Location,
        source: io::Error,
    ) -> Self {
        Self::Touch {
            store: Arc::clone(store),
            digest: Hex(*digest),
            location,
            source,
        }
    }

    pub(crate) fn store(store: &Arc<str>, problem: &str, source: Option<io::Error>) -> Self {
        Self::Store {
            store: Arc::clone(store),
            problem: problem.to_owned(),
            source,
        }
    }

    /// The name of the store the error is about, when there is one.
    #[must_use]
    pub fn store_name(&self) -> Option<&Arc<str>> {
        match self {
            Self::Missing { store, .. }
            | Self::Read { store, .. }
            | Self::Write { store, .. }
            | Self::Touch { store, .. }
            | Self::Sync { store, .. }
            | Self::Store { store, .. }
            | Self::Denied { store, .. }
            | Self::Unavailable { store, .. }
            | Self::Oversized { store, .. }
            | Self::Corrupt { store, .. }
            | Self::DigestMismatch { store, .. }
            | Self::LengthMismatch { store, .. }
            | Self::DecodeTask { store, .. }
            | Self::Injected { store, .. }
            | Self::Encode { store, .. } => Some(store),
            Self::TooLarge { .. } | Self::ForeignFolder { .. } => None,
        }
    }

    /// Where the chunk the error is about was, when the error says.
    #[must_use]
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Missing { location, .. }
            | Self::Read { location, .. }
            | Self::Write { location, .. }
            | Self::Touch { location, .. }
            | Self::Sync { location, .. }
            | Self::Denied { location, .. }
            | Self::Unavailable { location, .. }
            | Self::Oversized { location, .. }
            | Self::Corrupt { location, .. }
            | Self::DigestMismatch { location, .. }
            | Self::LengthMismatch { location, .. } => Some(location),
            _ => None,
        }
    }

    /// Whether this error means the chunk is there but its bytes are wrong (they do not
    /// decode, or decode to the wrong length or digest).
    #[must_use]
    pub fn is_bad_chunk(&self) -> bool {
        matches!(
            self,
            Self::Corrupt { .. }
                | Self::DigestMismatch { .. }
                | Self::LengthMismatch { .. }
                | Self::Oversized { chunk: true, .. }
        )
    }

    /// Whether this error means the chunk is absent (as opposed to present but unusable).
    #[must_use]
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
