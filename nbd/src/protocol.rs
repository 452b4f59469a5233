//! The wire format: the numbers of the NBD protocol and pure functions that parse and encode
//! its messages. Nothing here does I/O, so every parser can be fuzzed on bytes alone.
//!
//! All integers are big-endian (network byte order).

use crate::error::ProtocolError;

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle handshake's magic, and the magic of every option the client sends.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of a request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// The magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can leave out the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: leave out the 124 zero bytes.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is understood.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_DF` is understood (only with structured replies).
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: several connections may be used at once (one shared cache).
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: `NBD_CMD_CACHE` is understood.
pub const FLAG_SEND_CACHE: u16 = 1 << 10;

/// Option: choose an export and enter transmission (no error reply possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the session.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: start TLS (not offered).
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: done, success.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a list.
pub const REP_SERVER: u32 = 2;
/// Option reply: one item of information on an export.
pub const REP_INFO: u32 = 3;
/// Option reply: one metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Option reply error: option not supported.
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
/// Option reply error: option known but malformed or not allowed now.
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
/// Option reply error: no such export.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
/// Option reply error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;
/// Option reply error: the request or its reply is too large.
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information type: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Information type: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Information type: a description for people.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information type: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (refused: read-only).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (refused: read-only).
pub const CMD_TRIM: u16 = 4;
/// Command: prefetch into the cache.
pub const CMD_CACHE: u16 = 5;
/// Command: write zeroes (refused: read-only).
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command: block status.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access (ignored on a read-only export; some clients set it anyway).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: do not make a hole (write zeroes only).
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag: one content chunk in the reply.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag: one extent in a block status reply.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag: fail fast if zeroing is slow (write zeroes only).
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: the last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Structured reply type: nothing more.
pub const REPLY_TYPE_NONE: u16 = 0;
/// Structured reply type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Structured reply type: zeros at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Structured reply type: extents of one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Structured reply type: an error.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation` extent flag: not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` extent flag: reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// The one metadata context served.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// Smallest addressable unit advertised (any byte offset works).
pub const MIN_BLOCK_SIZE: u32 = 1;
/// The block size that reads efficiently.
pub const PREFERRED_BLOCK_SIZE: u32 = 4096;
/// The longest read served, and the most bytes a write may carry before the connection is
/// closed rather than drained: 32 MiB.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// The longest option data read; a longer option closes the connection.
pub const MAX_OPTION_LENGTH: u32 = 64 << 10;
/// The longest string (export name, query, message) the protocol allows.
pub const MAX_STRING: usize = 4096;
/// The most extents sent in one block status reply.
pub const MAX_EXTENTS: usize = 1 << 16;

/// Length of the server's first message: magic, `IHAVEOPT`, handshake flags.
pub const GREETING_LENGTH: usize = 18;
/// Length of an option header: magic, option, data length.
pub const OPTION_HEADER_LENGTH: usize = 16;
/// Length of a request header.
pub const REQUEST_LENGTH: usize = 28;

/// Error values sent in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Errno {
    /// Operation not permitted (a write to a read-only export).
    Perm,
    /// Input/output error (a chunk could not be read).
    Io,
    /// Invalid argument (out of range, too long, bad flags, unknown command).
    Inval,
    /// Value too large (a prefetch longer than the maximum payload).
    Overflow,
    /// The server is shutting down.
    Shutdown,
}

impl Errno {
    /// The number on the wire.
    #[must_use]
    pub fn code(self) -> u32 {
        match self {
            Self::Perm => 1,
            Self::Io => 5,
            Self::Inval => 22,
            Self::Overflow => 75,
            Self::Shutdown => 108,
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The server's greeting: `NBDMAGIC`, `IHAVEOPT`, fixed newstyle and no-zeroes.
#[must_use]
pub fn greeting() -> [u8; GREETING_LENGTH] {
    let mut out = [0u8; GREETING_LENGTH];
    out[..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    out
}

/// The client's flags after the greeting.
///
/// # Errors
/// [`ProtocolError::ClientFlags`] for a bit the server did not offer.
pub fn parse_client_flags(bytes: [u8; 4]) -> Result<u32, ProtocolError> {
    let flags = u32::from_be_bytes(bytes);
    if flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err(ProtocolError::ClientFlags { flags });
    }
    Ok(flags)
}

/// An option's header: the option and the length of its data.
///
/// # Errors
/// [`ProtocolError::OptionMagic`] for a wrong magic; [`ProtocolError::OptionTooLong`] for data
/// longer than [`MAX_OPTION_LENGTH`].
pub fn parse_option_header(bytes: [u8; OPTION_HEADER_LENGTH]) -> Result<(u32, u32), ProtocolError> {
    let magic = u64_at(&bytes, 0).unwrap_or(0);
    if magic != IHAVEOPT {
        return Err(ProtocolError::OptionMagic { magic });
    }
    let option = u32_at(&bytes, 8).unwrap_or(0);
    let length = u32_at(&bytes, 12).unwrap_or(0);
    if length > MAX_OPTION_LENGTH {
        return Err(ProtocolError::OptionTooLong { option, length });
    }
    Ok((option, length))
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export's name (empty: the default export).
    pub name: Vec<u8>,
    /// The information types asked for.
    pub requests: Vec<u16>,
}

/// Parses the data of `NBD_OPT_INFO` / `NBD_OPT_GO`; `None` if it is malformed.
#[must_use]
pub fn parse_info_request(data: &[u8]) -> Option<InfoRequest> {
    let name_length = usize::try_from(u32_at(data, 0)?).ok()?;
    if name_length > MAX_STRING {
        return None;
    }
    let name = data.get(4..4 + name_length)?.to_vec();
    let count = usize::from(u16_at(data, 4 + name_length)?);
    let list = data.get(6 + name_length..)?;
    if list.len() != count * 2 {
        return None;
    }
    let requests = list
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    Some(InfoRequest { name, requests })
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    /// The export's name.
    pub name: Vec<u8>,
    /// The queries (each `namespace:leaf`).
    pub queries: Vec<Vec<u8>>,
}

/// Parses the data of the meta context options; `None` if it is malformed (lengths beyond
/// the data, strings over 4096 bytes, bytes left over).
#[must_use]
pub fn parse_meta_context_request(data: &[u8]) -> Option<MetaContextRequest> {
    let name_length = usize::try_from(u32_at(data, 0)?).ok()?;
    if name_length > MAX_STRING {
        return None;
    }
    let name = data.get(4..4 + name_length)?.to_vec();
    let mut at = 4 + name_length;
    let count = u32_at(data, at)?;
    at += 4;
    let mut queries = Vec::new();
    for _ in 0..count {
        let length = usize::try_from(u32_at(data, at)?).ok()?;
        if length > MAX_STRING {
            return None;
        }
        queries.push(data.get(at + 4..at + 4 + length)?.to_vec());
        at += 4 + length;
    }
    (at == data.len()).then_some(MetaContextRequest { name, queries })
}

/// One option reply: header and data.
#[must_use]
pub fn option_reply(option: u32, reply_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The data of an `NBD_REP_SERVER` reply for an export.
#[must_use]
pub fn server_entry(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// The data of an `NBD_INFO_EXPORT` reply.
#[must_use]
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out
}

/// The data of an `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION` reply.
#[must_use]
pub fn info_text(info: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&info.to_be_bytes());
    out.extend_from_slice(truncated(text, MAX_STRING).as_bytes());
    out
}

/// The data of an `NBD_INFO_BLOCK_SIZE` reply: 1, 4096 and 32 MiB.
#[must_use]
pub fn info_block_size() -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&MIN_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&PREFERRED_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    out
}

/// The data of an `NBD_REP_META_CONTEXT` reply.
#[must_use]
pub fn meta_context_entry(id: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// What `NBD_OPT_EXPORT_NAME` answers: size, flags, and 124 zeros unless the client declined
/// them.
#[must_use]
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(134);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
    out
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command.
    pub command: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Image offset.
    pub offset: u64,
    /// Length (of data to read, of the range, or of the data that follows a write).
    pub length: u32,
}

impl Request {
    /// The header's bytes (what a client sends).
    #[must_use]
    pub fn encode(&self) -> [u8; REQUEST_LENGTH] {
        let mut out = [0u8; REQUEST_LENGTH];
        out[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.command.to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// Parses a request header.
    ///
    /// # Errors
    /// [`ProtocolError::RequestMagic`] for a wrong magic (the stream is out of step; the
    /// connection must close).
    pub fn parse(bytes: &[u8; REQUEST_LENGTH]) -> Result<Self, ProtocolError> {
        let magic = u32_at(bytes, 0).unwrap_or(0);
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::RequestMagic { magic });
        }
        Ok(Self {
            flags: u16_at(bytes, 4).unwrap_or(0),
            command: u16_at(bytes, 6).unwrap_or(0),
            cookie: u64_at(bytes, 8).unwrap_or(0),
            offset: u64_at(bytes, 16).unwrap_or(0),
            length: u32_at(bytes, 24).unwrap_or(0),
        })
    }
}

/// A simple reply header (followed by the data of a successful read).
#[must_use]
pub fn simple_reply(cookie: u64, error: Option<Errno>) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.map_or(0, Errno::code).to_be_bytes());
    out[8..].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// A structured reply chunk's header; `length` bytes of payload follow.
#[must_use]
pub fn structured_header(flags: u16, reply_type: u16, cookie: u64, length: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&reply_type.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..].copy_from_slice(&length.to_be_bytes());
    out
}

/// A final `NBD_REPLY_TYPE_NONE` chunk: success with nothing more to say.
#[must_use]
pub fn structured_done(cookie: u64) -> [u8; 20] {
    structured_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0)
}

/// A final `NBD_REPLY_TYPE_ERROR` chunk with a message for people.
#[must_use]
pub fn structured_error(cookie: u64, error: Errno, message: &str) -> Vec<u8> {
    let message = truncated(message, MAX_STRING);
    let length = 6 + message.len();
    let mut out = Vec::with_capacity(20 + length);
    out.extend_from_slice(&structured_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        u32::try_from(length).unwrap_or(u32::MAX),
    ));
    out.extend_from_slice(&error.code().to_be_bytes());
    out.extend_from_slice(&u16::try_from(message.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// An `NBD_REPLY_TYPE_OFFSET_HOLE` chunk (not final).
#[must_use]
pub fn structured_hole(cookie: u64, offset: u64, length: u32, done: bool) -> [u8; 32] {
    let mut out = [0u8; 32];
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    out[..20].copy_from_slice(&structured_header(
        flags,
        REPLY_TYPE_OFFSET_HOLE,
        cookie,
        12,
    ));
    out[20..28].copy_from_slice(&offset.to_be_bytes());
    out[28..].copy_from_slice(&length.to_be_bytes());
    out
}

/// The header of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk of `length` data bytes (they follow).
#[must_use]
pub fn structured_data_header(cookie: u64, offset: u64, length: u32, done: bool) -> [u8; 28] {
    let mut out = [0u8; 28];
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    out[..20].copy_from_slice(&structured_header(
        flags,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        length.saturating_add(8),
    ));
    out[20..].copy_from_slice(&offset.to_be_bytes());
    out
}

/// A final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: `(length, flags)` descriptors of one context.
#[must_use]
pub fn structured_block_status(cookie: u64, context: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let length = 4 + 8 * extents.len();
    let mut out = Vec::with_capacity(20 + length);
    out.extend_from_slice(&structured_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        cookie,
        u32::try_from(length).unwrap_or(u32::MAX),
    ));
    out.extend_from_slice(&context.to_be_bytes());
    for (length, flags) in extents {
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
    out
}

/// `text` cut to at most `limit` bytes on a character boundary.
#[must_use]
pub fn truncated(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
