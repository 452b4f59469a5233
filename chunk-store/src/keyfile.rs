//! PBS key files (feature `crypto`): the JSON `proxmox-backup-client key create` writes.
//!
//! `kdf` is `null` (the key stored as it is), `{"Scrypt": {"n", "r", "p", "salt"}}` or
//! `{"PBKDF2": {"iter", "salt"}}`; `data` is base64 of the raw key, or of
//! `IV(16) ‖ tag(16) ‖ AES-256-GCM(passphrase-derived key, raw key)`; `created` and
//! `modified` are RFC 3339; `fingerprint` (colon hex) and `hint` are optional.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace as _, KeyInit as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypt::{Cipher, CryptKey, Fingerprint};

/// The shortest passphrase accepted, as PBS's client.
pub const MIN_PASSPHRASE: usize = 5;

/// What went wrong with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file cannot be read.
    #[error("{path}: cannot read the key file")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file cannot be written, or exists already.
    #[error("{path}: cannot write the key file")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Not a key file.
    #[error("not a PBS key file: {0}")]
    Format(String),
    /// The passphrase is shorter than [`MIN_PASSPHRASE`].
    #[error("the passphrase is too short (at least {MIN_PASSPHRASE} bytes)")]
    ShortPassphrase,
    /// The key is protected by a passphrase and none was given.
    #[error("the key file is protected by a passphrase; none was given")]
    NoPassphrase,
    /// The passphrase does not open the key.
    #[error("wrong passphrase: the key file's key does not decrypt{}", hint.as_ref().map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    WrongPassphrase {
        /// The file's passphrase hint.
        hint: Option<String>,
    },
    /// The key inside does not have the fingerprint the file states.
    #[error("the key file states fingerprint {stated}, but its key has {actual}")]
    FingerprintMismatch {
        /// What the file says.
        stated: Fingerprint,
        /// What the key has.
        actual: Fingerprint,
    },
    /// The system's random source failed.
    #[error("no random bytes: {0}")]
    Random(String),
}

/// How a key file protects its key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kdf {
    /// Not at all: the file holds the raw key.
    None,
    /// scrypt of the passphrase (PBS's default: n 65536, r 8, p 1, 32 random salt bytes).
    Scrypt {
        /// CPU/memory cost, a power of two.
        n: u64,
        /// Block size.
        r: u64,
        /// Parallelism.
        p: u64,
        /// Salt.
        salt: Vec<u8>,
    },
    /// PBKDF2-HMAC-SHA256 of the passphrase (PBS: 65535 iterations).
    Pbkdf2 {
        /// Iterations.
        iter: u64,
        /// Salt.
        salt: Vec<u8>,
    },
}

impl std::fmt::Debug for Kdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Kdf {
    /// `none`, `scrypt` or `pbkdf2`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Scrypt { .. } => "scrypt",
            Self::Pbkdf2 { .. } => "pbkdf2",
        }
    }

    /// PBS's parameters for `name` with a fresh salt.
    ///
    /// # Errors
    /// [`KeyError::Format`] for an unknown name; [`KeyError::Random`].
    pub fn new(name: &str) -> Result<Self, KeyError> {
        let salt = || random::<32>().map(|s| s.to_vec());
        match name {
            "none" => Ok(Self::None),
            "scrypt" => Ok(Self::Scrypt {
                n: 65536,
                r: 8,
                p: 1,
                salt: salt()?,
            }),
            "pbkdf2" => Ok(Self::Pbkdf2 {
                iter: 65535,
                salt: salt()?,
            }),
            other => Err(KeyError::Format(format!("unknown kdf `{other}`"))),
        }
    }

    /// The 32-byte key derived from `passphrase`.
    fn derive(&self, passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        match self {
            Self::None => {}
            Self::Scrypt { n, r, p, salt } => {
                let params = scrypt::Params::new(
                    u8::try_from(n.trailing_zeros()).unwrap_or(u8::MAX),
                    u32::try_from(*r).unwrap_or(u32::MAX),
                    u32::try_from(*p).unwrap_or(u32::MAX),
                    32,
                )
                .map_err(|e| KeyError::Format(format!("scrypt parameters: {e}")))?;
                scrypt::scrypt(passphrase, salt, &params, &mut *key)
                    .map_err(|e| KeyError::Format(format!("scrypt: {e}")))?;
            }
            Self::Pbkdf2 { iter, salt } => {
                let rounds = u32::try_from(*iter).unwrap_or(u32::MAX);
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase, salt, rounds, &mut *key);
            }
        }
        Ok(key)
    }

    /// Refuses parameters that would take unbounded time or memory (a hostile key file).
    fn check(&self) -> Result<(), KeyError> {
        let bad = |what: String| Err(KeyError::Format(what));
        match self {
            Self::None => Ok(()),
            Self::Scrypt { n, r, p, .. } => {
                if !n.is_power_of_two() || *n < 2 || *n > 1 << 20 {
                    return bad(format!("scrypt n {n} is not a power of two up to 2^20"));
                }
                if !(1..=32).contains(r) || !(1..=16).contains(p) {
                    return bad(format!("scrypt r {r} or p {p} out of range"));
                }
                // scrypt's memory is 128 · n · r · p bytes; PBS allows about 1 GiB.
                if 128 * n * r * p > 1025 << 20 {
                    return bad("scrypt parameters need over 1 GiB of memory".to_owned());
                }
                Ok(())
            }
            Self::Pbkdf2 { iter, .. } => {
                if !(1..=10_000_000).contains(iter) {
                    return bad(format!("pbkdf2 iterations {iter} out of range"));
                }
                Ok(())
            }
        }
    }

    /// The form the file's JSON takes.
    fn to_file(&self) -> Option<KdfInFile> {
        match self {
            Self::None => None,
            Self::Scrypt { n, r, p, salt } => Some(KdfInFile::Scrypt {
                n: *n,
                r: *r,
                p: *p,
                salt: BASE64.encode(salt),
            }),
            Self::Pbkdf2 { iter, salt } => Some(KdfInFile::Pbkdf2 {
                iter: *iter,
                salt: BASE64.encode(salt),
            }),
        }
    }

    fn from_file(kdf: Option<KdfInFile>) -> Result<Self, KeyError> {
        let salt = |salt: &str| {
            BASE64
                .decode(salt)
                .map_err(|_| KeyError::Format("kdf salt is not base64".to_owned()))
        };
        let kdf = match kdf {
            None => return Ok(Self::None),
            Some(KdfInFile::Scrypt { n, r, p, salt: s }) => Self::Scrypt {
                n,
                r,
                p,
                salt: salt(&s)?,
            },
            Some(KdfInFile::Pbkdf2 { iter, salt: s }) => Self::Pbkdf2 {
                iter,
                salt: salt(&s)?,
            },
        };
        kdf.check()?;
        Ok(kdf)
    }
}

/// `kdf` as the file spells it: `null`, `{"Scrypt": {…}}` or `{"PBKDF2": {…}}`.
#[derive(Serialize, Deserialize)]
enum KdfInFile {
    Scrypt {
        n: u64,
        r: u64,
        p: u64,
        salt: String,
    },
    #[serde(rename = "PBKDF2")]
    Pbkdf2 { iter: u64, salt: String },
}

/// A key file's JSON as read: the key's bytes are decoded from base64 as they are parsed,
/// straight into memory that is wiped on drop, so neither the text nor the bytes stay behind
/// in a `String` or a JSON value.
#[derive(Deserialize)]
struct FileIn {
    #[serde(default)]
    kdf: Option<KdfInFile>,
    created: String,
    modified: String,
    data: SecretBase64,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    hint: Option<String>,
}

/// A key file's JSON as written: the base64 of the key borrowed from a wiped buffer.
#[derive(Serialize)]
struct FileOut<'a> {
    kdf: Option<KdfInFile>,
    created: &'a str,
    modified: &'a str,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
}

/// Base64 decoded while it is parsed: from the input itself where it has no escapes (the
/// usual case), into bytes wiped on drop.
struct SecretBase64(Zeroizing<Vec<u8>>);

impl<'de> Deserialize<'de> for SecretBase64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretBase64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SecretBase64, E> {
                let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
                BASE64
                    .decode_vec(text, &mut bytes)
                    .map_err(|_| E::custom("`data` is not base64"))?;
                Ok(SecretBase64(bytes))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A PBS key file.
#[derive(Clone)]
pub struct KeyFile {
    kdf: Kdf,
    created: String,
    modified: String,
    data: Zeroizing<Vec<u8>>,
    fingerprint: Option<Fingerprint>,
    hint: Option<String>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("kdf", &self.kdf)
            .field("created", &self.created)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

impl KeyFile {
    /// Parses a key file's JSON.
    ///
    /// # Errors
    /// [`KeyError::Format`] for anything that is not a well-formed key file.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        let format = |what: String| KeyError::Format(what);
        let file: FileIn = serde_json::from_slice(bytes).map_err(|e| format(e.to_string()))?;
        let kdf = Kdf::from_file(file.kdf)?;
        let data = file.data.0;
        let expected = if kdf == Kdf::None { 32 } else { 64 };
        if data.len() != expected {
            return Err(format(format!(
                "`data` is {} bytes, expected {expected}",
                data.len()
            )));
        }
        let fingerprint = match file.fingerprint {
            None => None,
            Some(text) => Some(Fingerprint::parse(&text).ok_or_else(|| {
                format("`fingerprint` is not 32 colon-separated hex bytes".to_owned())
            })?),
        };
        Ok(Self {
            kdf,
            created: file.created,
            modified: file.modified,
            data,
            fingerprint,
            hint: file.hint,
        })
    }

    /// Reads and parses the key file at `path`.
    ///
    /// # Errors
    /// [`KeyError::Read`], or as [`parse`](KeyFile::parse).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?);
        Self::parse(&bytes)
    }

    /// A key file for `key`, protected by `kdf` with `passphrase` (ignored for [`Kdf::None`]).
    ///
    /// # Errors
    /// [`KeyError::ShortPassphrase`], [`KeyError::NoPassphrase`], [`KeyError::Random`].
    pub fn create(key: &CryptKey, kdf: Kdf, passphrase: Option<&[u8]>) -> Result<Self, KeyError> {
        let data = if kdf == Kdf::None {
            key.raw().to_vec()
        } else {
            let passphrase = passphrase.ok_or(KeyError::NoPassphrase)?;
            if passphrase.len() < MIN_PASSPHRASE {
                return Err(KeyError::ShortPassphrase);
            }
            let derived = kdf.derive(passphrase)?;
            let iv = random::<16>()?;
            let mut sealed = key.raw().to_vec();
            let tag = Cipher::new(GenericArray::from_slice(&*derived))
                .encrypt_in_place_detached(GenericArray::from_slice(&iv), b"", &mut sealed)
                .map_err(|_| KeyError::Format("cannot seal the key".to_owned()))?;
            let mut data = iv.to_vec();
            data.extend_from_slice(&tag);
            data.extend_from_slice(&sealed);
            data
        };
        let now = rfc3339_now();
        Ok(Self {
            kdf,
            created: now.clone(),
            modified: now,
            data: Zeroizing::new(data),
            fingerprint: Some(key.fingerprint()),
            hint: None,
        })
    }

    /// The file's JSON, as PBS writes it, in memory wiped on drop.
    #[must_use]
    pub fn to_json(&self) -> Zeroizing<String> {
        let mut data = Zeroizing::new(String::with_capacity(self.data.len() * 4 / 3 + 4));
        BASE64.encode_string(&*self.data, &mut data);
        let file = FileOut {
            kdf: self.kdf.to_file(),
            created: &self.created,
            modified: &self.modified,
            data: &data,
            fingerprint: self.fingerprint.map(|f| f.to_string()),
            hint: self.hint.as_deref(),
        };
        // Room for all of it up front: a buffer that grew would leave copies behind.
        let mut json = Zeroizing::new(Vec::with_capacity(1024 + data.len()));
        let written = serde_json::to_writer(&mut *json, &file);
        debug_assert!(written.is_ok(), "writing JSON to memory does not fail");
        Zeroizing::new(String::from_utf8_lossy(&json).into_owned())
    }

    /// Writes the file at `path`, readable by its owner only; an existing file is never
    /// replaced. The file appears whole or not at all (a temporary beside it, fsynced, then
    /// linked to its name), and its folder is fsynced after, so a new key survives a power
    /// loss: every backup made with it needs it.
    ///
    /// # Errors
    /// [`KeyError::Write`], also when `path` exists.
    pub fn store_new(&self, path: &Path) -> Result<(), KeyError> {
        let error = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let folder = match path.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        if path.symlink_metadata().is_ok() {
            return Err(error(std::io::ErrorKind::AlreadyExists.into()));
        }
        let temporary = crate::fs::temporary_path(path);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(self.to_json().as_bytes())?;
                file.sync_all()
            })
            // link(2) fails if the name exists: never a replacement, even in a race.
            .and_then(|()| std::fs::hard_link(&temporary, path));
        let _ = std::fs::remove_file(&temporary);
        written.map_err(error)?;
        crate::fs::sync_folder(folder).map_err(error)
    }

    /// How the key is protected.
    #[must_use]
    pub fn kdf(&self) -> &Kdf {
        &self.kdf
    }

    /// When the key was made (RFC 3339, as the file says).
    #[must_use]
    pub fn created(&self) -> &str {
        &self.created
    }

    /// When the file was last changed (RFC 3339).
    #[must_use]
    pub fn modified(&self) -> &str {
        &self.modified
    }

    /// The fingerprint the file states, if it does.
    #[must_use]
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint
    }

    /// The passphrase hint, if any.
    #[must_use]
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether [`decrypt`](KeyFile::decrypt) needs a passphrase.
    #[must_use]
    pub fn needs_passphrase(&self) -> bool {
        self.kdf != Kdf::None
    }

    /// The key, opened with `passphrase` if the file is protected; its fingerprint must be
    /// the one the file states.
    ///
    /// # Errors
    /// [`KeyError::NoPassphrase`], [`KeyError::ShortPassphrase`],
    /// [`KeyError::WrongPassphrase`], [`KeyError::FingerprintMismatch`].
    pub fn decrypt(&self, passphrase: Option<&[u8]>) -> Result<CryptKey, KeyError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        if self.kdf == Kdf::None {
            raw.copy_from_slice(&self.data);
        } else {
            let passphrase = passphrase.ok_or(KeyError::NoPassphrase)?;
            if passphrase.len() < MIN_PASSPHRASE {
                return Err(KeyError::ShortPassphrase);
            }
            let derived = self.kdf.derive(passphrase)?;
            let (iv, rest) = self.data.split_at(16);
            let (tag, sealed) = rest.split_at(16);
            let mut opened = Zeroizing::new(sealed.to_vec());
            Cipher::new(GenericArray::from_slice(&*derived))
                .decrypt_in_place_detached(
                    GenericArray::from_slice(iv),
                    b"",
                    &mut opened,
                    GenericArray::from_slice(tag),
                )
                .map_err(|_| KeyError::WrongPassphrase {
                    hint: self.hint.clone(),
                })?;
            raw.copy_from_slice(&opened);
        }
        let key = CryptKey::new(*raw);
        if let Some(stated) = self.fingerprint {
            let actual = key.fingerprint();
            if stated != actual {
                return Err(KeyError::FingerprintMismatch { stated, actual });
            }
        }
        Ok(key)
    }
}

/// Now in UTC as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339_utc(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// `seconds` since 1970 as RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian):
/// how key files (and `cairn info`) show times.
#[must_use]
pub fn rfc3339_utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_796_206_332), "2026-12-02T10:12:12Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn every_kdf_round_trips_and_wrong_passphrases_and_fingerprints_are_refused() {
        let key = CryptKey::new([42; 32]);
        for name in ["none", "pbkdf2", "scrypt"] {
            let file =
                KeyFile::create(&key, Kdf::new(name).unwrap(), Some(b"correct horse")).unwrap();
            let parsed = KeyFile::parse(file.to_json().as_bytes()).unwrap();
            assert_eq!(parsed.kdf().name(), name);
            let opened = parsed.decrypt(Some(b"correct horse")).unwrap();
            assert_eq!(opened.fingerprint(), key.fingerprint(), "{name}");
            if name != "none" {
                assert!(matches!(
                    parsed.decrypt(Some(b"wrong horse")),
                    Err(KeyError::WrongPassphrase { .. })
                ));
                assert!(matches!(
                    parsed.decrypt(Some(b"abcd")),
                    Err(KeyError::ShortPassphrase)
                ));
                assert!(matches!(parsed.decrypt(None), Err(KeyError::NoPassphrase)));
            }
        }
        assert!(matches!(
            KeyFile::create(&key, Kdf::new("scrypt").unwrap(), Some(b"1234")),
            Err(KeyError::ShortPassphrase)
        ));
        // A stated fingerprint that is not the key's.
        let file = KeyFile::create(&key, Kdf::None, None).unwrap();
        let other = CryptKey::new([1; 32]).fingerprint().to_string();
        let json = file
            .to_json()
            .replace(&key.fingerprint().to_string(), &other);
        assert!(matches!(
            KeyFile::parse(json.as_bytes()).unwrap().decrypt(None),
            Err(KeyError::FingerprintMismatch { .. })
        ));
    }

    #[test]
    fn hostile_files_are_refused_before_any_work() {
        for json in [
            "",
            "[]",
            r#"{"kdf":null,"created":"x","modified":"x","data":"AAAA"}"#,
            r#"{"kdf":{"Scrypt":{"n":4294967296,"r":8,"p":1,"salt":""}},"created":"x","modified":"x","data":""}"#,
            r#"{"kdf":{"Scrypt":{"n":65537,"r":8,"p":1,"salt":""}},"created":"x","modified":"x","data":""}"#,
            r#"{"kdf":{"PBKDF2":{"iter":4294967295,"salt":""}},"created":"x","modified":"x","data":""}"#,
            r#"{"kdf":{"Argon2":{}},"created":"x","modified":"x","data":""}"#,
        ] {
            assert!(
                matches!(KeyFile::parse(json.as_bytes()), Err(KeyError::Format(_))),
                "{json}"
            );
        }
    }
}
