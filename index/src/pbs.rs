//! What PBS's two index formats share: magics, the 4096-byte header, uuid and ctime.

use std::io::{Seek, SeekFrom, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bytes::{array_at, magic_of};
use crate::error::{Hex, IndexError, Origin, Result};

/// Magic of a PBS fixed index: the first 8 bytes of SHA-256 of
/// `Proxmox Backup fixed sized chunk index v1.0`.
pub const FIXED_INDEX_MAGIC: [u8; 8] = [0x2f, 0x7f, 0x41, 0xed, 0x91, 0xfd, 0x0f, 0xcd];

/// Magic of a PBS dynamic index: the first 8 bytes of SHA-256 of
/// `Proxmox Backup dynamic sized chunk index v1.0`.
pub const DYNAMIC_INDEX_MAGIC: [u8; 8] = [0x1c, 0x91, 0x4e, 0xa5, 0x19, 0xba, 0xb3, 0xcd];

/// Both PBS index formats start with a header of this many bytes.
pub const PBS_HEADER_SIZE: usize = 4096;

/// Byte positions inside the PBS header.
pub(crate) const UUID_AT: usize = 8;
pub(crate) const CTIME_AT: usize = 24;
pub(crate) const CSUM_AT: usize = 32;

/// The identity fields of a PBS index header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PbsHeader {
    /// A random identifier of the index.
    pub uuid: [u8; 16],
    /// Creation time, seconds since the Unix epoch.
    pub ctime: i64,
}

impl PbsHeader {
    /// A fresh header: a random (version 4) uuid and the current time.
    #[must_use]
    pub fn generate() -> Self {
        let mut uuid = [0u8; 16];
        if getrandom::fill(&mut uuid).is_err() {
            // No OS randomness: fall back to the clock and the process id. Uniqueness is all a
            // uuid needs here; it is never used for security.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            uuid = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
        }
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let ctime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Self { uuid, ctime }
    }

    /// The uuid as 32 lowercase hex digits, as PBS prints it.
    #[must_use]
    pub fn uuid_hex(&self) -> String {
        Hex(self.uuid).to_string()
    }

    pub(crate) fn parse(header: &[u8]) -> Self {
        Self {
            uuid: array_at(header, UUID_AT).unwrap_or_default(),
            ctime: array_at(header, CTIME_AT).map_or(0, i64::from_le_bytes),
        }
    }

    /// A full header block: magic, uuid, ctime, checksum; the caller fills the format's fields.
    pub(crate) fn block(&self, magic: [u8; 8], csum: &[u8; 32]) -> Vec<u8> {
        let mut block = vec![0u8; PBS_HEADER_SIZE];
        block[..8].copy_from_slice(&magic);
        block[UUID_AT..UUID_AT + 16].copy_from_slice(&self.uuid);
        block[CTIME_AT..CTIME_AT + 8].copy_from_slice(&self.ctime.to_le_bytes());
        block[CSUM_AT..CSUM_AT + 32].copy_from_slice(csum);
        block
    }
}

/// Whether the PBS index checksum was checked when the index was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumCheck {
    /// It was checked and matched (a mismatch fails the open).
    Verified,
    /// Checking was skipped on request ([`OpenOptions::verify_checksum`](crate::OpenOptions)).
    Skipped,
}

/// Checks that `data` starts with `magic` and holds the whole 4096-byte header.
pub(crate) fn check_header(data: &[u8], magic: [u8; 8], file: &Origin) -> Result<()> {
    if data.len() < 8 {
        return Err(IndexError::truncated(file, "magic", data.len(), 8));
    }
    if magic_of(data) != magic {
        return Err(IndexError::BadMagic {
            file: file.clone(),
            found: Hex(magic_of(data)),
        });
    }
    if data.len() < PBS_HEADER_SIZE {
        return Err(IndexError::truncated(
            file,
            "header",
            data.len(),
            PBS_HEADER_SIZE as u64,
        ));
    }
    Ok(())
}

/// What both PBS index types keep beside their table: where they came from, the header's
/// identity, the stored checksum and whether it was checked.
#[derive(Debug, Clone)]
pub(crate) struct PbsMeta {
    pub(crate) file: Origin,
    pub(crate) header: PbsHeader,
    pub(crate) checksum: [u8; 32],
    pub(crate) check: ChecksumCheck,
}

impl PbsMeta {
    /// The header fields of `data` (already checked by [`check_header`]).
    pub(crate) fn read(data: &[u8], file: Origin) -> Self {
        Self {
            header: PbsHeader::parse(data),
            checksum: array_at(data, CSUM_AT).unwrap_or_default(),
            check: ChecksumCheck::Skipped,
            file,
        }
    }

    /// Compares the stored checksum with `computed`: a mismatch is an error, a match is
    /// remembered as verified.
    pub(crate) fn verify(&mut self, computed: [u8; 32]) -> Result<()> {
        if computed != self.checksum {
            return Err(IndexError::ChecksumMismatch {
                file: self.file.clone(),
                expected: Hex(self.checksum),
                computed: Hex(computed),
            });
        }
        self.check = ChecksumCheck::Verified;
        Ok(())
    }

    /// Whether the stored checksum matches, computing it only if it was not checked at open.
    pub(crate) fn matches(&self, computed: impl FnOnce() -> [u8; 32]) -> bool {
        self.check == ChecksumCheck::Verified || computed() == self.checksum
    }
}

/// Writes the finished header block at the start of `out`, then flushes.
pub(crate) fn write_header<W: Write + Seek>(
    out: &mut W,
    block: &[u8],
    file: &Origin,
) -> Result<()> {
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.write_all(block))
        .and_then(|()| out.seek(SeekFrom::End(0)))
        .and_then(|_| out.flush())
        .map_err(|source| IndexError::Write {
            file: file.clone(),
            source,
        })
}
