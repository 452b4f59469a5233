//! PBS client-side encryption (feature `crypto`): the key, its fingerprint and id key, keyed
//! digests, and encrypted DataBlobs.
//!
//! - `id_key = PBKDF2-HMAC-SHA256(key, "_id_key", 10 iterations)`; a chunk's digest is
//!   `SHA-256(plaintext ‖ id_key)` ([`DigestAlgorithm::KeyedSha256`]).
//! - The fingerprint is `SHA-256(SHA-256("Proxmox Backup Encryption Key Fingerprint") ‖ id_key)`.
//! - An encrypted blob is `magic ‖ CRC-32 LE of the ciphertext ‖ IV(16) ‖ tag(16) ‖
//!   ciphertext`: AES-256-GCM with a 16-byte IV, random per blob, and no associated data; the
//!   "compressed" magic means zstd (level 1) before encryption, used only when shorter.

use std::fmt;

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U16;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace as _, KeyInit as _};
use aes_gcm::aes::Aes256;
use sha2::Digest as _;
use zeroize::{Zeroize as _, Zeroizing};

use crate::blob::first_bytes;
use crate::blob::{
    BlobKind, ENCRYPTED_BLOB_HEADER_SIZE, ENCRYPTED_BLOB_MAGIC, ENCRYPTED_COMPRESSED_BLOB_MAGIC,
    MAX_BLOB_SIZE, decode_zstd,
};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::CodecError;
use cairn_digest::IdKey;

/// AES-256-GCM with PBS's 16-byte IV.
pub(crate) type Cipher = AesGcm<Aes256, U16>;

/// What the fingerprint hashes with the id key: SHA-256 of this text.
const FINGERPRINT_TEXT: &[u8] = b"Proxmox Backup Encryption Key Fingerprint";

/// A PBS encryption key: 32 bytes, wiped from memory when dropped.
pub struct CryptKey {
    key: Zeroizing<[u8; 32]>,
    id_key: Zeroizing<[u8; 32]>,
    cipher: Cipher,
}

impl fmt::Debug for CryptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl CryptKey {
    /// The key of these 32 bytes (which the caller should wipe).
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        let key = Zeroizing::new(key);
        let mut id_key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(&*key, b"_id_key", 10, &mut *id_key);
        let cipher = Cipher::new(GenericArray::from_slice(&*key));
        Self {
            key,
            id_key,
            cipher,
        }
    }

    /// A new random key.
    ///
    /// # Errors
    /// If the system's random source fails.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        let made = Self::new(key);
        key.zeroize();
        Ok(made)
    }

    /// The raw key, for writing a key file.
    pub(crate) fn raw(&self) -> &[u8; 32] {
        &self.key
    }

    /// The digest algorithm of chunks encrypted with this key.
    #[must_use]
    pub fn digest_algorithm(&self) -> DigestAlgorithm {
        DigestAlgorithm::KeyedSha256(IdKey(*self.id_key))
    }

    /// The keyed digest of `data`.
    #[must_use]
    pub fn digest(&self, data: &[u8]) -> Digest {
        self.digest_algorithm().digest(data)
    }

    /// The key's fingerprint, which PBS shows and stores beside encrypted backups.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        let input: [u8; 32] = sha2::Sha256::digest(FINGERPRINT_TEXT).into();
        Fingerprint(self.digest(&input))
    }

    /// Encrypts `plaintext` into a blob: compressed first when that is shorter, a fresh random
    /// IV each time.
    ///
    /// # Errors
    /// [`CodecError::TooLarge`] over 128 MiB; [`CodecError::Random`] if the system's random
    /// source fails.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, CodecError> {
        if plaintext.len() > MAX_BLOB_SIZE {
            return Err(CodecError::TooLarge {
                what: "chunk",
                size: plaintext.len() as u64,
                limit: MAX_BLOB_SIZE as u64,
            });
        }
        let (magic, payload) = match zstd::bulk::compress(plaintext, 1) {
            Ok(compressed) if compressed.len() < plaintext.len() => {
                (ENCRYPTED_COMPRESSED_BLOB_MAGIC, compressed)
            }
            _ => (ENCRYPTED_BLOB_MAGIC, plaintext.to_vec()),
        };
        let mut iv = [0u8; 16];
        getrandom::fill(&mut iv).map_err(|e| CodecError::Random(e.to_string()))?;
        let mut blob = Vec::with_capacity(ENCRYPTED_BLOB_HEADER_SIZE + payload.len());
        blob.extend_from_slice(&magic);
        blob.extend_from_slice(&[0; 4]);
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&payload);
        let (head, body) = blob.split_at_mut(ENCRYPTED_BLOB_HEADER_SIZE);
        let tag = self
            .cipher
            .encrypt_in_place_detached(GenericArray::from_slice(&iv), b"", body)
            .map_err(|_| CodecError::Decrypt)?;
        let crc = crc32fast::hash(body);
        head[8..12].copy_from_slice(&crc.to_le_bytes());
        head[28..44].copy_from_slice(&tag);
        Ok(blob)
    }

    /// Decrypts an encrypted blob to at most `max_len` bytes of plaintext. A plain blob is
    /// decoded as it is (a backup may mix them).
    ///
    /// # Errors
    /// [`CodecError::Decrypt`] for a wrong key or a tampered blob; otherwise as
    /// [`decode_blob`](crate::decode_blob).
    pub fn decrypt(&self, blob: &[u8], max_len: usize) -> Result<Vec<u8>, CodecError> {
        match BlobKind::of(blob) {
            Some(BlobKind::Encrypted | BlobKind::EncryptedCompressed) => {}
            Some(_) => return crate::blob::decode_blob(blob, max_len),
            None => {
                return Err(CodecError::UnknownFormat {
                    found: first_bytes(blob),
                });
            }
        }
        let (head, ciphertext) = crate::blob::checked_payload(blob)?;
        let limit = max_len.min(MAX_BLOB_SIZE);
        let compressed = head[..8] == ENCRYPTED_COMPRESSED_BLOB_MAGIC;
        if !compressed && ciphertext.len() > limit {
            return Err(CodecError::TooLarge {
                what: "decoded chunk",
                size: ciphertext.len() as u64,
                limit: limit as u64,
            });
        }
        let mut payload = Zeroizing::new(ciphertext.to_vec());
        self.cipher
            .decrypt_in_place_detached(
                GenericArray::from_slice(&head[12..28]),
                b"",
                &mut payload,
                GenericArray::from_slice(&head[28..44]),
            )
            .map_err(|_| CodecError::Decrypt)?;
        if compressed {
            decode_zstd(&payload, limit)
        } else {
            Ok(payload.to_vec())
        }
    }
}

/// A key's fingerprint: 32 bytes shown as colon-separated hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The first 8 bytes, as PBS shows a key in short.
    #[must_use]
    pub fn short(&self) -> String {
        colon_hex(&self.0[..8])
    }

    /// Parses 32 colon-separated hex bytes.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        let mut parts = text.trim().split(':');
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Self(bytes))
    }
}

fn colon_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&colon_hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn test_key() -> CryptKey {
        CryptKey::new(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn pbs_test_vector_fingerprint() {
        assert_eq!(
            test_key().fingerprint().to_string(),
            "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"
        );
        assert_eq!(test_key().fingerprint().short(), "0e:ab:d4:46:0b:6e:b9:ca");
        let fingerprint = test_key().fingerprint();
        assert_eq!(
            Fingerprint::parse(&fingerprint.to_string()),
            Some(fingerprint)
        );
        assert_eq!(Fingerprint::parse("0e:ab"), None);
        assert!(
            !format!("{:?}", test_key()).contains("01"),
            "Debug shows no key bytes"
        );
    }

    #[test]
    fn keyed_digests_are_sha256_of_data_then_id_key() {
        let key = test_key();
        let mut id_key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(key.raw(), b"_id_key", 10, &mut id_key);
        let mut both = b"hello".to_vec();
        both.extend_from_slice(&id_key);
        let expected: [u8; 32] = sha2::Sha256::digest(&both).into();
        assert_eq!(key.digest(b"hello"), expected);
        assert_ne!(
            key.digest(b"hello"),
            DigestAlgorithm::Sha256.digest(b"hello")
        );
    }

    #[test]
    fn both_magics_a_fresh_iv_each_time_and_tampering_fails_the_tag() {
        let key = test_key();
        let text = b"cairn keeps chunks ".repeat(500);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        for (plaintext, magic) in [
            (&text[..], ENCRYPTED_COMPRESSED_BLOB_MAGIC),
            (&noise[..], ENCRYPTED_BLOB_MAGIC),
        ] {
            let blob = key.encrypt(plaintext).unwrap();
            assert_eq!(blob[..8], magic);
            assert_eq!(key.decrypt(&blob, plaintext.len()).unwrap(), plaintext);
            assert_ne!(
                key.encrypt(plaintext).unwrap()[12..28],
                blob[12..28],
                "fresh IV"
            );
            // Without the key: refused, naming what it is.
            let plain_error = crate::decode_blob(&blob, plaintext.len()).unwrap_err();
            assert!(
                matches!(plain_error, CodecError::Encrypted { .. }),
                "{plain_error}"
            );
            // A flipped ciphertext byte with the CRC made right again: the tag fails.
            let mut tampered = blob.clone();
            tampered[60] ^= 1;
            let crc = crc32fast::hash(&tampered[44..]);
            tampered[8..12].copy_from_slice(&crc.to_le_bytes());
            assert!(matches!(
                key.decrypt(&tampered, plaintext.len()),
                Err(CodecError::Decrypt)
            ));
            // Another key.
            let other = CryptKey::new([7; 32]);
            assert!(matches!(
                other.decrypt(&blob, plaintext.len()),
                Err(CodecError::Decrypt)
            ));
            // The CRC still guards against plain damage.
            let mut damaged = blob.clone();
            damaged[50] ^= 1;
            assert!(matches!(
                key.decrypt(&damaged, plaintext.len()),
                Err(CodecError::CrcMismatch { .. })
            ));
            // Shorter than promised.
            assert!(key.decrypt(&blob, plaintext.len() - 1).is_err());
        }
        // Plain blobs decode with a key too.
        let plain = crate::encode_blob(b"plain").unwrap();
        assert_eq!(key.decrypt(&plain, 5).unwrap(), b"plain");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_with_a_key_encrypts_and_catches_authentic_chunks_under_other_digests() {
        use std::sync::Arc;

        use crate::{ChunkEncoding, ChunkSource, ChunkStore, MemoryStore, StoreError};
        let store = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
        let key = Arc::new(test_key());
        let source = ChunkSource::new(store.clone(), DigestAlgorithm::Sha256).with_key(key.clone());
        let (digest, _) = source.write(b"secret data".to_vec()).await.unwrap();
        assert_eq!(digest, key.digest(b"secret data"));
        let stored = store.get(&digest).await.unwrap().bytes;
        assert_eq!(stored[..8], ENCRYPTED_BLOB_MAGIC);
        assert_eq!(source.read(&digest, 11).await.unwrap(), b"secret data");
        // The same authentic blob under the digest of other data.
        let other = key.digest(b"other data!");
        store.set_raw(other, stored);
        let error = source.read(&other, 11).await.unwrap_err();
        assert!(
            matches!(error, StoreError::DigestMismatch { .. }),
            "{error}"
        );
        // Without the key: refused, naming the magic.
        let plain = ChunkSource::new(store.clone(), key.digest_algorithm());
        let error = plain.read(&digest, 11).await.unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    source: CodecError::Encrypted { .. },
                    ..
                }
            ),
            "{error}"
        );
    }

    proptest! {
        #[test]
        fn encrypted_blobs_round_trip(data in prop::collection::vec(any::<u8>(), 0..3000), seed in any::<u8>()) {
            let key = CryptKey::new([seed; 32]);
            let blob = key.encrypt(&data).unwrap();
            prop_assert_eq!(key.decrypt(&blob, data.len()).unwrap(), data);
        }
    }
}
