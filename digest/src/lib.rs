//! The chunk digest vocabulary cairn's crates share: [`Digest`], [`DigestAlgorithm`] and
//! [`Hex`], the one hex formatter.
//!
//! ```
//! use cairn_digest::{DigestAlgorithm, Hex, from_hex};
//!
//! let digest = DigestAlgorithm::Sha256.digest(b"");
//! assert_eq!(
//!     Hex(digest).to_string(),
//!     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
//! );
//! assert_eq!(from_hex(&Hex(digest).to_string()), Some(digest));
//! ```

use std::fmt;

/// A 32-byte chunk digest.
pub type Digest = [u8; 32];

/// The hash that turns a chunk's plaintext into its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// SHA-256: every PBS index and datastore, and casync with `--digest=sha256`.
    #[default]
    Sha256,
    /// SHA-512/256: casync's default.
    Sha512_256,
    /// SHA-256 of the plaintext followed by a key's 32-byte id key: the digests of a PBS
    /// backup encrypted on the client, so that they tell nothing without the key.
    KeyedSha256(IdKey),
}

impl DigestAlgorithm {
    /// `sha256` or `sha512-256`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512_256 => "sha512-256",
            Self::KeyedSha256(_) => "sha256-keyed",
        }
    }

    /// The digest of `data` with this algorithm.
    #[must_use]
    pub fn digest(self, data: &[u8]) -> Digest {
        use sha2::Digest as _;
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).into(),
            Self::Sha512_256 => sha2::Sha512_256::digest(data).into(),
            Self::KeyedSha256(IdKey(id_key)) => {
                let mut hasher = sha2::Sha256::new();
                hasher.update(data);
                // After the data, as PBS does, so the key cannot be extended past.
                hasher.update(id_key);
                hasher.finalize().into()
            }
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 32 bytes a PBS encryption key derives for its chunk digests (see
/// [`DigestAlgorithm::KeyedSha256`]). It cannot give back the key, but it lets one test
/// whether a backup holds given data, so `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdKey(pub [u8; 32]);

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(..)")
    }
}

/// Bytes shown as lowercase hex, for messages and file names: `Hex(digest)`, `Hex(magic)`.
/// `Debug` shows the same, so errors that derive `Debug` stay readable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hex<T>(pub T);

impl<T: AsRef<[u8]>> fmt::Display for Hex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.as_ref() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Hex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `bytes` as lowercase hex.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    Hex(bytes).to_string()
}

/// Parses 64 hex digits (either case) into a digest.
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

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_a_digest() {
        let digest: Digest = std::array::from_fn(|i| (i * 37) as u8);
        let text = to_hex(&digest);
        assert_eq!(text.len(), 64);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(from_hex(&text), Some(digest));
        assert_eq!(from_hex(&text.to_uppercase()), Some(digest));
        assert_eq!(from_hex(&text[..62]), None);
        assert_eq!(from_hex(&format!("{}zz", &text[..62])), None);
        assert_eq!(format!("{:?}", Hex([0xab, 0x01])), "ab01");
    }

    #[test]
    fn algorithms_hash_as_their_names_say() {
        assert_eq!(
            to_hex(&DigestAlgorithm::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            to_hex(&DigestAlgorithm::Sha512_256.digest(b"abc")),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
        assert_eq!(DigestAlgorithm::default(), DigestAlgorithm::Sha256);
        assert_eq!(DigestAlgorithm::Sha256.to_string(), "sha256");
    }
}
