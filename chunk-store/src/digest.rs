//! Chunk digests.

use std::fmt;

/// A 32-byte chunk digest.
pub type Digest = [u8; 32];

/// The hash that turns a chunk's plaintext into its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// SHA-256: PBS, and casync with `--digest=sha256`.
    #[default]
    Sha256,
    /// SHA-512/256: casync's default.
    Sha512_256,
}

impl DigestAlgorithm {
    /// The digest of `data`.
    #[must_use]
    pub fn digest(self, data: &[u8]) -> Digest {
        use sha2::Digest as _;
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).into(),
            Self::Sha512_256 => sha2::Sha512_256::digest(data).into(),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sha256 => "sha256",
            Self::Sha512_256 => "sha512-256",
        })
    }
}

/// 64 lowercase hex digits.
#[must_use]
pub fn to_hex(digest: &Digest) -> String {
    crate::error::DigestHex(*digest).to_string()
}

/// Parses 64 hex digits (either case).
#[must_use]
pub fn from_hex(text: &str) -> Option<Digest> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        digest[i] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(digest)
}
