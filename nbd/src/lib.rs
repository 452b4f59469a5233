//! A read-only Network Block Device server that serves anything implementing [`Export`].
//!
//! It speaks the fixed newstyle handshake (`EXPORT_NAME`, `GO`, `INFO` with block sizes,
//! `LIST`, `ABORT`, `STRUCTURED_REPLY`, and `base:allocation` through `SET_META_CONTEXT` /
//! `LIST_META_CONTEXT`) and serves `READ` (simple and structured replies, zero runs as holes),
//! `BLOCK_STATUS`, `CACHE`, `FLUSH` and `DISC`; writes are refused with `EPERM`. Requests of
//! one connection run concurrently and are answered as each completes. A client that breaks
//! the protocol loses its connection and nothing else; limits on connections, requests in
//! flight, bytes in flight and handshake time protect the process.
//!
//! [`protocol`] holds the wire format as pure functions and [`negotiation`] the option
//! haggling as a state machine, so both can be fuzzed without sockets.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_nbd::{Export, MemoryExport, Server, ServerOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let disk: Arc<dyn Export> = Arc::new(MemoryExport::new(vec![7u8; 1 << 20]));
//! let server = Server::new([("disk".to_owned(), disk)], ServerOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let stop = CancellationToken::new();
//! let serving = tokio::spawn({
//!     let (server, stop) = (server.clone(), stop.clone());
//!     async move { server.serve_tcp(listener, stop).await }
//! });
//! // ... clients connect to nbd://127.0.0.1:PORT/disk ...
//! stop.cancel();
//! serving.await??;
//! # Ok(())
//! # }
//! ```

mod error;
mod export;
pub mod negotiation;
pub mod protocol;
mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use crate::error::{ExportError, NbdError, ProtocolError};
pub use crate::export::{Export, Extent, MemoryExport, Segment, Session};
pub use crate::server::{ConnectionStats, Server, ServerOptions};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
