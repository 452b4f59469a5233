//! Helpers for tests and fuzzing (feature `testing`): a small NBD client and the session check
//! the fuzz target runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::export::{Export, MemoryExport};
use crate::protocol::{
    self, BASE_ALLOCATION, CLIENT_FIXED_NEWSTYLE, CLIENT_NO_ZEROES, IHAVEOPT, OPT_GO,
    OPT_SET_META_CONTEXT, OPT_STRUCTURED_REPLY, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS,
    REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, Request, SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
};
use crate::server::{Server, ServerOptions};

/// The bytes a client sends to open option haggling with fixed newstyle and no zeroes.
#[must_use]
pub fn client_flags() -> Vec<u8> {
    (CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)
        .to_be_bytes()
        .to_vec()
}

/// An option as a client sends it.
#[must_use]
pub fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = IHAVEOPT.to_be_bytes().to_vec();
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The data of `NBD_OPT_GO` / `NBD_OPT_INFO` for `name`, asking for `requests`.
#[must_use]
pub fn go_data(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut out = u32::try_from(name.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&u16::try_from(requests.len()).unwrap_or(0).to_be_bytes());
    for r in requests {
        out.extend_from_slice(&r.to_be_bytes());
    }
    out
}

/// The data of the meta context options for `name` with `queries`.
#[must_use]
pub fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut out = u32::try_from(name.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&u32::try_from(queries.len()).unwrap_or(0).to_be_bytes());
    for q in queries {
        out.extend_from_slice(&u32::try_from(q.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(q.as_bytes());
    }
    out
}

/// What a structured reply said, reassembled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructuredReply {
    /// The data, holes filled with zeros, in place (for reads).
    pub data: Vec<u8>,
    /// Bytes of the data that came as holes.
    pub hole_bytes: u64,
    /// `(length, flags)` descriptors (for block status).
    pub extents: Vec<(u32, u32)>,
    /// The error number, if an error chunk came.
    pub error: Option<u32>,
    /// How many chunks the reply had.
    pub chunks: usize,
}

/// A minimal NBD client over any stream, for tests: fixed newstyle, `GO`, optional structured
/// replies and `base:allocation`, one request at a time.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    /// The export's size.
    pub size: u64,
    /// The transmission flags.
    pub flags: u16,
    structured: bool,
    cookie: u64,
}

/// A failure of the test client (the server broke the protocol or the stream ended).
pub type ClientResult<T> = std::io::Result<T>;

fn broken(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Connects to `export`, with structured replies and `base:allocation` if `structured`.
    ///
    /// # Errors
    /// If the server refuses or breaks the protocol.
    pub async fn connect(mut stream: S, export: &str, structured: bool) -> ClientResult<Self> {
        let mut greeting = [0u8; protocol::GREETING_LENGTH];
        stream.read_exact(&mut greeting).await?;
        if greeting != protocol::greeting() {
            return Err(broken("bad greeting"));
        }
        stream.write_all(&client_flags()).await?;
        if structured {
            stream.write_all(&option(OPT_STRUCTURED_REPLY, &[])).await?;
            Self::expect_ack(&mut stream).await?;
            stream
                .write_all(&option(
                    OPT_SET_META_CONTEXT,
                    &meta_data(export, &[BASE_ALLOCATION]),
                ))
                .await?;
            while Self::option_reply(&mut stream).await?.0 != protocol::REP_ACK {}
        }
        stream
            .write_all(&option(OPT_GO, &go_data(export, &[])))
            .await?;
        let mut size = 0;
        let mut flags = 0;
        loop {
            let (reply, data) = Self::option_reply(&mut stream).await?;
            match reply {
                protocol::REP_INFO if data.len() == 12 && data[..2] == [0, 0] => {
                    size = u64::from_be_bytes(data[2..10].try_into().map_err(|_| broken("info"))?);
                    flags = u16::from_be_bytes([data[10], data[11]]);
                }
                protocol::REP_INFO => {}
                protocol::REP_ACK => break,
                other => return Err(broken(&format!("GO refused with {other:#x}"))),
            }
        }
        Ok(Self {
            stream,
            size,
            flags,
            structured,
            cookie: 0,
        })
    }

    async fn option_reply(stream: &mut S) -> ClientResult<(u32, Vec<u8>)> {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).await?;
        if header[..8] != protocol::OPTION_REPLY_MAGIC.to_be_bytes() {
            return Err(broken("bad option reply magic"));
        }
        let reply = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        let length = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
        let mut data = vec![0u8; length as usize];
        stream.read_exact(&mut data).await?;
        Ok((reply, data))
    }

    async fn expect_ack(stream: &mut S) -> ClientResult<()> {
        match Self::option_reply(stream).await?.0 {
            protocol::REP_ACK => Ok(()),
            other => Err(broken(&format!("expected ACK, got {other:#x}"))),
        }
    }

    /// Sends a request; the reply is read with [`reply`](Client::reply).
    ///
    /// # Errors
    /// If the stream fails.
    pub async fn send(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
    ) -> ClientResult<u64> {
        self.cookie += 1;
        let request = Request {
            flags,
            command,
            cookie: self.cookie,
            offset,
            length,
        };
        self.stream.write_all(&request.encode()).await?;
        Ok(self.cookie)
    }

    /// Sends raw bytes (a write's data, garbage).
    ///
    /// # Errors
    /// If the stream fails.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> ClientResult<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one reply: `(cookie, reply)`. A simple reply to a read carries `read_length`
    /// bytes unless it is an error; a structured one places its data relative to `offset`
    /// (the read's).
    ///
    /// # Errors
    /// If the server breaks the protocol or the stream ends.
    pub async fn reply(
        &mut self,
        offset: u64,
        read_length: u32,
    ) -> ClientResult<(u64, StructuredReply)> {
        if !self.structured {
            let mut header = [0u8; 16];
            self.stream.read_exact(&mut header).await?;
            if header[..4] != SIMPLE_REPLY_MAGIC.to_be_bytes() {
                return Err(broken("bad simple reply magic"));
            }
            let error = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let cookie = u64::from_be_bytes(header[8..16].try_into().map_err(|_| broken("h"))?);
            let mut reply = StructuredReply {
                chunks: 1,
                ..StructuredReply::default()
            };
            if error == 0 {
                reply.data = vec![0u8; read_length as usize];
                self.stream.read_exact(&mut reply.data).await?;
            } else {
                reply.error = Some(error);
            }
            return Ok((cookie, reply));
        }
        let mut reply = StructuredReply::default();
        loop {
            let mut header = [0u8; 20];
            self.stream.read_exact(&mut header).await?;
            if header[..4] != STRUCTURED_REPLY_MAGIC.to_be_bytes() {
                return Err(broken("bad structured reply magic"));
            }
            let flags = u16::from_be_bytes([header[4], header[5]]);
            let kind = u16::from_be_bytes([header[6], header[7]]);
            let cookie = u64::from_be_bytes(header[8..16].try_into().map_err(|_| broken("h"))?);
            let length = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
            let mut payload = vec![0u8; length as usize];
            self.stream.read_exact(&mut payload).await?;
            reply.chunks += 1;
            match kind {
                REPLY_TYPE_NONE => {}
                REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
                    let chunk_offset = u64::from_be_bytes(
                        payload
                            .get(..8)
                            .ok_or_else(|| broken("short"))?
                            .try_into()
                            .map_err(|_| broken("o"))?,
                    );
                    let (at, bytes): (u64, Vec<u8>) = if kind == REPLY_TYPE_OFFSET_DATA {
                        (chunk_offset, payload[8..].to_vec())
                    } else {
                        let hole = u32::from_be_bytes(
                            payload
                                .get(8..12)
                                .ok_or_else(|| broken("short"))?
                                .try_into()
                                .map_err(|_| broken("o"))?,
                        );
                        reply.hole_bytes += u64::from(hole);
                        (chunk_offset, vec![0u8; hole as usize])
                    };
                    let at = at
                        .checked_sub(offset)
                        .ok_or_else(|| broken("before the read"))?;
                    let at = usize::try_from(at).map_err(|_| broken("o"))?;
                    if reply.data.len() < at + bytes.len() {
                        reply.data.resize(at + bytes.len(), 0);
                    }
                    reply.data[at..at + bytes.len()].copy_from_slice(&bytes);
                }
                REPLY_TYPE_BLOCK_STATUS => {
                    for pair in payload.get(4..).unwrap_or_default().chunks_exact(8) {
                        reply.extents.push((
                            u32::from_be_bytes([pair[0], pair[1], pair[2], pair[3]]),
                            u32::from_be_bytes([pair[4], pair[5], pair[6], pair[7]]),
                        ));
                    }
                }
                kind if kind & 0x8000 != 0 => {
                    reply.error = Some(u32::from_be_bytes(
                        payload
                            .get(..4)
                            .ok_or_else(|| broken("short"))?
                            .try_into()
                            .map_err(|_| broken("e"))?,
                    ));
                }
                _ => return Err(broken("unknown structured reply type")),
            }
            if flags & REPLY_FLAG_DONE != 0 {
                return Ok((cookie, reply));
            }
        }
    }

    /// Reads `length` bytes at `offset` (one request, waiting for its reply); reads through
    /// the structured reply's offsets relative to `offset`.
    ///
    /// # Errors
    /// The server's error number as an i/o error, or a broken reply.
    pub async fn read(&mut self, offset: u64, length: u32) -> ClientResult<StructuredReply> {
        let cookie = self.send(protocol::CMD_READ, 0, offset, length).await?;
        let (got, mut reply) = self.reply(offset, length).await?;
        if got != cookie {
            return Err(broken("wrong cookie"));
        }
        reply.data.resize(length as usize, 0);
        Ok(reply)
    }

    /// The stream, to read or leave unread by hand.
    #[must_use]
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Sends `NBD_CMD_DISC` and closes.
    ///
    /// # Errors
    /// If the stream fails.
    pub async fn disconnect(mut self) -> ClientResult<()> {
        self.send(protocol::CMD_DISC, 0, 0, 0).await?;
        self.stream.shutdown().await
    }
}

/// The fuzz target's check: a session with arbitrary client bytes must end without a panic or
/// a hang. With the first byte odd, a valid handshake into transmission comes first, so the
/// rest exercises the request path.
///
/// # Panics
/// If the server panics or a session does not end within 10 s.
pub fn fuzz_session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::new();
    if mode & 1 == 1 {
        input.extend(client_flags());
        input.extend(option(OPT_STRUCTURED_REPLY, &[]));
        input.extend(option(
            OPT_SET_META_CONTEXT,
            &meta_data("disk", &[BASE_ALLOCATION]),
        ));
        input.extend(option(OPT_GO, &go_data("disk", &[])));
    }
    input.extend_from_slice(rest);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        let mut image = vec![0u8; 256 << 10];
        for (i, byte) in image.iter_mut().enumerate().skip(64 << 10).take(64 << 10) {
            *byte = (i % 251) as u8;
        }
        let export: Arc<dyn Export> = Arc::new(MemoryExport::new(image));
        let server = Server::new(
            [("disk".to_owned(), export)],
            ServerOptions::default().handshake_timeout(Duration::from_secs(5)),
        )
        .expect("a valid export name");
        let (client, server_side) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(server_side);
        let serving = tokio::spawn(async move {
            server
                .serve_connection(read, write, "fuzz", CancellationToken::new())
                .await
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = client_read.read_to_end(&mut sink).await;
        });
        let _ = client_write.write_all(&input).await;
        let _ = client_write.shutdown().await;
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("the session ended")
            .expect("the session did not panic");
        drop(client_write);
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    });
    // The pure parsers on the raw bytes too.
    let _ = crate::protocol::parse_info_request(rest);
    let _ = crate::protocol::parse_meta_context_request(rest);
    if let Ok(header) = <[u8; protocol::REQUEST_LENGTH]>::try_from(
        rest.get(..protocol::REQUEST_LENGTH).unwrap_or_default(),
    ) && let Ok(request) = Request::parse(&header)
    {
        assert_eq!(request.encode(), header);
    }
}
