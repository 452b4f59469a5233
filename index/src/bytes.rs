//! Bounds-checked little-endian reads from an index held in memory.

use std::path::Path;

use crate::error::{IndexError, Origin, Result};
use crate::index::Digest;

/// The little-endian `u64` at `position`, or `None` if it does not fit.
pub(crate) fn u64_at(data: &[u8], position: usize) -> Option<u64> {
    let bytes = data.get(position..position.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The 32 bytes at `position`, or `None` if they do not fit.
pub(crate) fn digest_at(data: &[u8], position: usize) -> Option<Digest> {
    data.get(position..position.checked_add(32)?)?
        .try_into()
        .ok()
}

/// The `N` bytes at `position`, or `None` if they do not fit.
pub(crate) fn array_at<const N: usize>(data: &[u8], position: usize) -> Option<[u8; N]> {
    data.get(position..position.checked_add(N)?)?
        .try_into()
        .ok()
}

/// The first 8 bytes, zero-padded if the data is shorter (for "unknown magic" messages).
pub(crate) fn magic_of(data: &[u8]) -> [u8; 8] {
    let mut magic = [0u8; 8];
    let n = data.len().min(8);
    magic[..n].copy_from_slice(&data[..n]);
    magic
}

/// Reads the index file at `path` whole, with the origin its errors will name.
pub(crate) fn read_index_file(path: &Path) -> Result<(Vec<u8>, Origin)> {
    let file = Origin::file(path);
    match std::fs::read(path) {
        Ok(data) => Ok((data, file)),
        Err(source) => Err(IndexError::Read { file, source }),
    }
}
