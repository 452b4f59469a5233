//! The crate's errors.

use std::error::Error as StdError;

/// A client broke the protocol: the connection it came on is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The client set flags the server did not offer.
    #[error("the client sent unknown handshake flags {flags:#x}")]
    ClientFlags {
        /// The flags.
        flags: u32,
    },
    /// An option did not start with `IHAVEOPT`.
    #[error("an option started with {magic:#018x} instead of the option magic")]
    OptionMagic {
        /// What came instead.
        magic: u64,
    },
    /// An option's data is longer than the server reads.
    #[error("option {option} carries {length} bytes, more than the 64 KiB allowed")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its declared length.
        length: u32,
    },
    /// `NBD_OPT_EXPORT_NAME` named no export (the protocol allows no error reply to it).
    #[error("the client chose export {name:?}, which does not exist")]
    UnknownExport {
        /// The name, lossily decoded.
        name: String,
    },
    /// A request did not start with the request magic.
    #[error("a request started with {magic:#010x} instead of the request magic")]
    RequestMagic {
        /// What came instead.
        magic: u32,
    },
    /// A write carries more data than the server drains.
    #[error("a write request carries {length} bytes, more than the 32 MiB allowed")]
    WriteTooLong {
        /// Its declared length.
        length: u32,
    },
    /// The handshake took longer than allowed.
    #[error("the handshake did not finish within {seconds} s")]
    HandshakeTimeout {
        /// The limit.
        seconds: u64,
    },
    /// A reply made no progress for longer than the write timeout: the client stopped reading.
    #[error("a reply made no progress for {seconds} s: the client stopped reading")]
    WriteTimeout {
        /// The limit.
        seconds: u64,
    },
    /// The client sent nothing for longer than the idle timeout, with no request in progress.
    #[error("idle for {seconds} s with no request in progress")]
    IdleTimeout {
        /// The limit.
        seconds: u64,
    },
}

/// Why a connection ended other than by the client's choice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// The client broke the protocol.
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// Reading from or writing to the connection failed.
    #[error("connection i/o failed")]
    Io(#[source] std::io::Error),
    /// Accepting connections failed for good.
    #[error("cannot accept connections on {address}")]
    Accept {
        /// The listening address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An export's name is not a valid NBD string (empty names are the default export; names
    /// over 4096 bytes or with NUL are refused).
    #[error("export name {name:?} is not usable: {reason}")]
    ExportName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// An export could not serve a request: the client gets `EIO` for it, the server logs it.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {length} bytes at offset {offset}")]
pub struct ExportError {
    /// What was asked: `read`, `prefetch` or `describe`.
    pub action: &'static str,
    /// Image offset of the request.
    pub offset: u64,
    /// Its length.
    pub length: u64,
    /// The export's own error.
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

impl ExportError {
    /// An error of `action` on `length` bytes at `offset`, caused by `source`.
    pub fn new(
        action: &'static str,
        offset: u64,
        length: u64,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            action,
            offset,
            length,
            source: source.into(),
        }
    }
}
