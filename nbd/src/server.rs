//! The server: accepting connections, the handshake, and transmission with concurrent
//! requests answered as each completes.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader, BufWriter,
};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutWriter;
use tokio_util::sync::CancellationToken;

use crate::error::{ExportError, NbdError, ProtocolError};
use crate::export::{Export, Segment, Session};
use crate::negotiation::{BASE_ALLOCATION_ID, Chosen, Exports, Negotiation, Next};
use crate::protocol::{
    self, CMD_BLOCK_STATUS, CMD_CACHE, CMD_DISC, CMD_FLAG_DF, CMD_FLAG_FUA, CMD_FLAG_REQ_ONE,
    CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, Errno, MAX_EXTENTS, MAX_PAYLOAD,
    OPT_EXPORT_NAME, REQUEST_LENGTH, Request, STATE_HOLE, STATE_ZERO,
};

/// Zero runs in a read at least this long go out as holes (unless the client asked for one
/// content chunk); shorter ones are sent as bytes.
const SHORTEST_HOLE: u64 = 64 << 10;
/// The unit in which read bytes in flight are counted.
const BUDGET_UNIT: u64 = 4096;
/// How long to wait before accepting again after `accept` failed (out of descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How long a connection that arrives when all slots are taken waits for one before it is
/// refused: a burst of short-lived connections does not turn away the client after it.
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// Limits that keep one client from starving the others or the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Connections served at once; one more waits up to a second for a free slot, then is
    /// closed. Default 64.
    pub max_connections: usize,
    /// Requests of one connection in progress at once; the connection's next request is read
    /// when one finishes. Default 64.
    pub requests_per_connection: usize,
    /// Bytes of reads in progress across all connections, each held until its reply is
    /// written. Default 256 MiB (at least 32 MiB, the longest read).
    pub read_bytes_in_flight: u64,
    /// Bytes of reads one connection may have in progress: its share of
    /// [`read_bytes_in_flight`](ServerOptions::read_bytes_in_flight), so a client that stops
    /// reading its replies stops only itself. Default 64 MiB (at least 32 MiB).
    pub read_bytes_per_connection: u64,
    /// How long a reply may make no progress being written before its connection is closed
    /// (the client stopped reading). Default 30 s.
    pub write_timeout: Duration,
    /// How long a connection in transmission may send nothing, with no request in progress,
    /// before it is closed; `None` (the default): never. qemu and the kernel's client keep a
    /// connection open, idle, for as long as the disk is attached, so closing idle connections
    /// breaks them; peers that vanish are found by TCP keepalive instead.
    pub idle_timeout: Option<Duration>,
    /// Time a client has from connecting to entering transmission. Default 10 s.
    pub handshake_timeout: Duration,
    /// On shutdown, time given to requests in progress before connections are cut. Default
    /// 10 s.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: 64,
            requests_per_connection: 64,
            read_bytes_in_flight: 256 << 20,
            read_bytes_per_connection: 64 << 20,
            write_timeout: Duration::from_secs(30),
            idle_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerOptions {
    /// Sets [`max_connections`](ServerOptions::max_connections) (at least 1).
    #[must_use]
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// Sets [`requests_per_connection`](ServerOptions::requests_per_connection) (at least 1).
    #[must_use]
    pub fn requests_per_connection(mut self, requests: usize) -> Self {
        self.requests_per_connection = requests.max(1);
        self
    }

    /// Sets [`read_bytes_in_flight`](ServerOptions::read_bytes_in_flight).
    #[must_use]
    pub fn read_bytes_in_flight(mut self, bytes: u64) -> Self {
        self.read_bytes_in_flight = bytes;
        self
    }

    /// Sets [`read_bytes_per_connection`](ServerOptions::read_bytes_per_connection).
    #[must_use]
    pub fn read_bytes_per_connection(mut self, bytes: u64) -> Self {
        self.read_bytes_per_connection = bytes;
        self
    }

    /// Sets [`write_timeout`](ServerOptions::write_timeout).
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](ServerOptions::idle_timeout).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`handshake_timeout`](ServerOptions::handshake_timeout).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`drain_timeout`](ServerOptions::drain_timeout).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

/// What one connection did, as logged when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// The export it used, if it got that far.
    pub export: Option<String>,
    /// Read requests answered.
    pub reads: u64,
    /// Bytes those reads returned.
    pub bytes_read: u64,
    /// Block status requests answered.
    pub block_status: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// The session's own summary ([`Session::summary`]).
    pub summary: String,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    bytes_read: AtomicU64,
    block_status: AtomicU64,
    errors: AtomicU64,
}

/// A read-only NBD server over a set of named exports. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    exports: Exports,
    options: ServerOptions,
    connections: Arc<Semaphore>,
    read_budget: Arc<Semaphore>,
    /// A connection's share of the budget, in units.
    connection_units: u32,
    next_connection: AtomicU64,
}

impl Server {
    /// A server of `exports` (name, export).
    ///
    /// # Errors
    /// [`NbdError::ExportName`] for a name that is not a valid NBD string or is given twice.
    pub fn new(
        exports: impl IntoIterator<Item = (String, Arc<dyn Export>)>,
        options: ServerOptions,
    ) -> Result<Self, NbdError> {
        let mut map = Exports::new();
        for (name, export) in exports {
            let reason = if name.len() > protocol::MAX_STRING {
                Some("longer than 4096 bytes")
            } else if name.contains('\0') {
                Some("contains NUL")
            } else if map.contains_key(&name) {
                Some("given twice")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(NbdError::ExportName { name, reason });
            }
            map.insert(name, export);
        }
        let units = (options.read_bytes_in_flight.max(u64::from(MAX_PAYLOAD)) / BUDGET_UNIT)
            .min(u64::from(u32::MAX >> 4));
        let units = u32::try_from(units).unwrap_or(u32::MAX >> 4);
        let connection_units = (options
            .read_bytes_per_connection
            .max(u64::from(MAX_PAYLOAD))
            / BUDGET_UNIT)
            .min(u64::from(units));
        let connection_units = u32::try_from(connection_units).unwrap_or(units);
        Ok(Self {
            shared: Arc::new(Shared {
                exports: map,
                connections: Arc::new(Semaphore::new(options.max_connections.max(1))),
                read_budget: Arc::new(Semaphore::new(units as usize)),
                connection_units,
                options,
                next_connection: AtomicU64::new(1),
            }),
        })
    }

    /// The export names, sorted.
    pub fn export_names(&self) -> impl Iterator<Item = &str> {
        self.shared.exports.keys().map(String::as_str)
    }

    /// Serves connections accepted on `listener` until `stop` is cancelled; then stops
    /// accepting, lets the connections finish what they were doing (up to
    /// [`drain_timeout`](ServerOptions::drain_timeout)) and returns.
    ///
    /// # Errors
    /// Never for one connection's failure (that is logged); only if `accept` keeps failing
    /// in a way that retrying cannot fix.
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> Result<(), NbdError> {
        let address = listener
            .local_addr()
            .map_or_else(|_| "a TCP socket".to_owned(), |a| a.to_string());
        self.accept_loop(&address, &stop, || async {
            let (stream, peer) = listener.accept().await?;
            // Replies are written whole; small ones should not wait for more.
            let _ = stream.set_nodelay(true);
            // A peer that vanished (its machine gone, the network cut) is noticed within
            // minutes, without closing connections that are merely idle.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(60))
                .with_interval(Duration::from_secs(10));
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let (read, write) = stream.into_split();
            Ok((read, write, peer.to_string()))
        })
        .await
    }

    /// [`serve_tcp`](Server::serve_tcp) on a Unix socket.
    ///
    /// # Errors
    /// As for [`serve_tcp`](Server::serve_tcp).
    pub async fn serve_unix(
        &self,
        listener: UnixListener,
        stop: CancellationToken,
    ) -> Result<(), NbdError> {
        let address = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "a Unix socket".to_owned());
        self.accept_loop(&address, &stop, || async {
            let (stream, _) = listener.accept().await?;
            let (read, write) = stream.into_split();
            Ok((read, write, "unix".to_owned()))
        })
        .await
    }

    async fn accept_loop<F, Fut, R, W>(
        &self,
        address: &str,
        stop: &CancellationToken,
        mut accept: F,
    ) -> Result<(), NbdError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<(R, W, String)>>,
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = accept() => accepted,
            };
            let (read, write, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_transient(&error) => {
                    tracing::warn!("accepting on {address} failed, retrying: {error}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
                Err(source) => {
                    return Err(NbdError::Accept {
                        address: address.to_owned(),
                        source,
                    });
                }
            };
            let slots = &self.shared.connections;
            let slot = match Arc::clone(slots).try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => tokio::select! {
                    () = stop.cancelled() => break,
                    waited = tokio::time::timeout(SLOT_WAIT, Arc::clone(slots).acquire_owned()) => {
                        waited.ok().and_then(Result::ok)
                    }
                },
            };
            let Some(slot) = slot else {
                tracing::warn!(
                    "refused a connection from {peer}: {} connections are open already",
                    self.shared.options.max_connections
                );
                continue;
            };
            let server = self.clone();
            let stop = stop.child_token();
            connections.spawn(async move {
                let _slot = slot;
                server.serve_connection(read, write, &peer, stop).await;
            });
        }
        // Connections see the same cancellation and drain on their own, bounded.
        while connections.join_next().await.is_some() {}
        Ok(())
    }

    /// Serves one connection, given as its two halves, until the client leaves, breaks the
    /// protocol or `stop` is cancelled. Logs how it ended and what it did.
    pub async fn serve_connection<R, W>(
        &self,
        read: R,
        write: W,
        peer: &str,
        stop: CancellationToken,
    ) -> ConnectionStats
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut read = BufReader::with_capacity(64 << 10, read);
        // A write that makes no progress for the write timeout fails, and ends the connection.
        let mut write = TimeoutWriter::new(write);
        write.set_timeout(Some(self.shared.options.write_timeout));
        let mut write = BufWriter::with_capacity(256 << 10, Box::pin(write));
        let limit = self.shared.options.handshake_timeout;
        let handshake = tokio::select! {
            () = stop.cancelled() => return ConnectionStats::default(),
            outcome = tokio::time::timeout(limit, self.handshake(&mut read, &mut write)) => outcome,
        };
        let chosen = match handshake {
            Ok(Ok(Some(chosen))) => chosen,
            Ok(Ok(None)) => {
                tracing::debug!("connection {id} from {peer} ended during the handshake");
                return ConnectionStats::default();
            }
            Ok(Err(error)) => {
                log_end(id, peer, &error);
                return ConnectionStats::default();
            }
            Err(_) => {
                log_end(
                    id,
                    peer,
                    &NbdError::Protocol(ProtocolError::HandshakeTimeout {
                        seconds: limit.as_secs(),
                    }),
                );
                return ConnectionStats::default();
            }
        };
        tracing::info!(
            "connection {id} from {peer}: export {:?}{}",
            chosen.name,
            if chosen.structured {
                ", structured replies"
            } else {
                ""
            }
        );
        let session = chosen.export.open();
        let counters = Arc::new(Counters::default());
        let result = self
            .transmission(&chosen, &session, &counters, read, write, &stop)
            .await;
        let stats = ConnectionStats {
            export: Some(chosen.name.clone()),
            reads: counters.reads.load(Ordering::Relaxed),
            bytes_read: counters.bytes_read.load(Ordering::Relaxed),
            block_status: counters.block_status.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            summary: session.summary(),
        };
        if let Err(error) = result {
            log_end(id, peer, &error);
        }
        tracing::info!(
            "connection {id} from {peer} closed: export {:?}, {} reads, {} bytes, {} block status, \
             {} errors{}{}",
            chosen.name,
            stats.reads,
            stats.bytes_read,
            stats.block_status,
            stats.errors,
            if stats.summary.is_empty() { "" } else { "; " },
            stats.summary,
        );
        stats
    }

    /// The handshake: the chosen export, or `None` if the client left.
    async fn handshake<R, W>(&self, read: &mut R, write: &mut W) -> Result<Option<Chosen>, NbdError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        write
            .write_all(&protocol::greeting())
            .await
            .map_err(NbdError::Io)?;
        write.flush().await.map_err(NbdError::Io)?;
        let mut flags = [0u8; 4];
        if !read_or_eof(read, &mut flags).await? {
            return Ok(None);
        }
        let flags = protocol::parse_client_flags(flags)?;
        let mut negotiation = Negotiation::new(&self.shared.exports, flags);
        loop {
            let mut header = [0u8; protocol::OPTION_HEADER_LENGTH];
            if !read_or_eof(read, &mut header).await? {
                return Ok(None);
            }
            let (option, length) = protocol::parse_option_header(header)?;
            let mut data = vec![0u8; length as usize];
            if !read_or_eof(read, &mut data).await? {
                return Ok(None);
            }
            let outcome = negotiation.handle(option, &data);
            write
                .write_all(&outcome.reply)
                .await
                .map_err(NbdError::Io)?;
            write.flush().await.map_err(NbdError::Io)?;
            match outcome.next {
                Next::Option => {}
                Next::Transmission(chosen) => return Ok(Some(chosen)),
                Next::Close if option == OPT_EXPORT_NAME => {
                    return Err(ProtocolError::UnknownExport {
                        name: String::from_utf8_lossy(&data).into_owned(),
                    }
                    .into());
                }
                Next::Close => return Ok(None),
            }
        }
    }

    /// Transmission: requests read here, served by tasks, answered by the writer task.
    async fn transmission<R, W>(
        &self,
        chosen: &Chosen,
        session: &Arc<dyn Session>,
        counters: &Arc<Counters>,
        mut read: BufReader<R>,
        write: BufWriter<W>,
        stop: &CancellationToken,
    ) -> Result<(), NbdError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (replies, queue) = mpsc::unbounded_channel::<Reply>();
        // Cancelled by a stop, or by the writer when it fails (a client that stopped reading
        // past the write timeout): whatever this connection waits for, it stops waiting.
        let closed = stop.child_token();
        let mut writer = tokio::spawn(write_replies(write, queue, closed.clone()));
        let requests = self.shared.options.requests_per_connection.max(1);
        let slots = Arc::new(Semaphore::new(requests));
        // This connection's share of the read budget: taken before the server's, so a
        // connection waits on its own replies before it holds any of the others' budget.
        let share = Arc::new(Semaphore::new(self.shared.connection_units as usize));
        let idle = self.shared.options.idle_timeout;
        let context = Arc::new(RequestContext {
            export: chosen.name.clone(),
            size: chosen.export.size(),
            structured: chosen.structured,
            session: Arc::clone(session),
            counters: Arc::clone(counters),
        });
        let ended = loop {
            if replies.is_closed() {
                break Ok(());
            }
            let mut header = [0u8; REQUEST_LENGTH];
            let got = {
                let next = read_or_eof(&mut read, &mut header);
                tokio::pin!(next);
                loop {
                    tokio::select! {
                        () = closed.cancelled() => break None,
                        got = &mut next => break Some(got),
                        // Idle only with nothing in progress; else the client awaits replies.
                        () = sleep_or_never(idle) => if slots.available_permits() == requests {
                            break Some(Err(ProtocolError::IdleTimeout {
                                seconds: idle.unwrap_or_default().as_secs(),
                            }
                            .into()));
                        },
                    }
                }
            };
            match got {
                None | Some(Ok(false)) => break Ok(()),
                Some(Ok(true)) => {}
                Some(Err(error)) => break Err(error),
            }
            let request = match Request::parse(&header) {
                Ok(request) => request,
                Err(error) => break Err(error.into()),
            };
            if request.command == CMD_DISC {
                break Ok(());
            }
            if request.command == CMD_WRITE {
                // Refused, but its data must be read to stay in step.
                if request.length > MAX_PAYLOAD {
                    break Err(ProtocolError::WriteTooLong {
                        length: request.length,
                    }
                    .into());
                }
                if let Err(error) = discard(&mut read, u64::from(request.length)).await {
                    break Err(error);
                }
            }
            let Some(slot) = acquire(&slots, 1, &closed).await else {
                break Ok(());
            };
            let units = if request.command == CMD_READ {
                u32::try_from(u64::from(request.length).div_ceil(BUDGET_UNIT))
                    .unwrap_or(u32::MAX)
                    .clamp(1, self.shared.connection_units)
            } else {
                1
            };
            let Some(own) = acquire(&share, units, &closed).await else {
                break Ok(());
            };
            let Some(budget) = acquire(&self.shared.read_budget, units, &closed).await else {
                break Ok(());
            };
            let context = Arc::clone(&context);
            let replies = replies.clone();
            tokio::spawn(async move {
                let parts = context.answer(request).await;
                let _ = replies.send(Reply {
                    parts,
                    _permits: [slot, own, budget],
                });
            });
        };
        // The writer ends once every request task has sent its reply and dropped its sender.
        drop(replies);
        let drained = tokio::time::timeout(self.shared.options.drain_timeout, &mut writer).await;
        let written = match drained {
            Ok(Ok(written)) => written,
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                writer.abort();
                tracing::warn!(
                    "export {:?}: requests still running after {} s were cut off",
                    chosen.name,
                    self.shared.options.drain_timeout.as_secs()
                );
                Ok(())
            }
        };
        let seconds = self.shared.options.write_timeout.as_secs();
        // A write that timed out is the reason, whatever the reading side saw after.
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Err(ProtocolError::WriteTimeout { seconds }.into())
            }
            written => ended.and(written.map_err(NbdError::Io)),
        }
    }
}

/// Whether an `accept` error passes (the connection died before it was taken, descriptors ran
/// out for a moment).
fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::OutOfMemory
    ) || matches!(error.raw_os_error(), Some(23 | 24 | 105 | 12))
}

fn log_end(id: u64, peer: &str, error: &NbdError) {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    tracing::warn!("connection {id} from {peer} closed: {text}");
}

/// `units` permits of `semaphore`, or `None` when `stop` comes first.
async fn acquire(
    semaphore: &Arc<Semaphore>,
    units: u32,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        () = stop.cancelled() => None,
        permit = Arc::clone(semaphore).acquire_many_owned(units) => permit.ok(),
    }
}

/// Fills `buf`; `false` if the stream ended before its first byte.
async fn read_or_eof<R: AsyncRead + Unpin>(read: &mut R, buf: &mut [u8]) -> Result<bool, NbdError> {
    match read.read_exact(buf).await {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(NbdError::Io(error)),
    }
}

/// Reads and drops `length` bytes.
async fn discard<R: AsyncRead + Unpin>(read: &mut R, length: u64) -> Result<(), NbdError> {
    let copied = tokio::io::copy(&mut read.take(length), &mut tokio::io::sink())
        .await
        .map_err(NbdError::Io)?;
    if copied < length {
        return Err(NbdError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// A reply, ready to write, with the permits its request holds until it is written: its
/// request slot, its units of the connection's share, its units of the server's budget.
struct Reply {
    parts: Vec<Part>,
    _permits: [OwnedSemaphorePermit; 3],
}

/// Sleeps for `duration`, or forever if there is none.
async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// Bytes of a reply.
enum Part {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>, Range<usize>),
    Zeros(u64),
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Writes replies as they come, flushing whenever none is waiting; on a failure (the write
/// timeout among them) cancels `closed`, so the connection ends, and drops the replies queued
/// with their permits.
async fn write_replies<W: AsyncWrite + Unpin>(
    write: BufWriter<W>,
    queue: mpsc::UnboundedReceiver<Reply>,
    closed: CancellationToken,
) -> std::io::Result<()> {
    let written = write_all_replies(write, queue).await;
    if written.is_err() {
        closed.cancel();
    }
    written
}

async fn write_all_replies<W: AsyncWrite + Unpin>(
    mut write: BufWriter<W>,
    mut queue: mpsc::UnboundedReceiver<Reply>,
) -> std::io::Result<()> {
    while let Some(reply) = queue.recv().await {
        for part in &reply.parts {
            match part {
                Part::Owned(bytes) => write.write_all(bytes).await?,
                Part::Shared(bytes, range) => match bytes.get(range.clone()) {
                    Some(slice) => write.write_all(slice).await?,
                    // Checked when the reply was built; never sends a short reply.
                    None => return Err(std::io::ErrorKind::InvalidData.into()),
                },
                Part::Zeros(length) => {
                    let mut length = *length;
                    while length > 0 {
                        let now = length.min(ZEROS.len() as u64);
                        write.write_all(&ZEROS[..now as usize]).await?;
                        length -= now;
                    }
                }
            }
        }
        drop(reply);
        if queue.is_empty() {
            write.flush().await?;
        }
    }
    write.flush().await?;
    write.shutdown().await
}

/// What a request task needs.
struct RequestContext {
    export: String,
    size: u64,
    structured: bool,
    session: Arc<dyn Session>,
    counters: Arc<Counters>,
}

impl RequestContext {
    fn in_range(&self, request: &Request) -> bool {
        request
            .offset
            .checked_add(u64::from(request.length))
            .is_some_and(|end| end <= self.size)
    }

    fn error(&self, request: &Request, error: Errno, message: &str) -> Vec<Part> {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if self.structured {
            vec![Part::Owned(protocol::structured_error(
                request.cookie,
                error,
                message,
            ))]
        } else {
            vec![Part::Owned(
                protocol::simple_reply(request.cookie, Some(error)).to_vec(),
            )]
        }
    }

    fn success(&self, request: &Request) -> Vec<Part> {
        if self.structured {
            vec![Part::Owned(
                protocol::structured_done(request.cookie).to_vec(),
            )]
        } else {
            vec![Part::Owned(
                protocol::simple_reply(request.cookie, None).to_vec(),
            )]
        }
    }

    fn export_failed(&self, request: &Request, error: &ExportError) -> Vec<Part> {
        let mut text = format!("export {:?}: {error}", self.export);
        let mut cause = std::error::Error::source(error);
        while let Some(next) = cause {
            text.push_str(": ");
            text.push_str(&next.to_string());
            cause = next.source();
        }
        tracing::warn!("{text}");
        self.error(request, Errno::Io, &error.to_string())
    }

    /// The reply to `request`.
    async fn answer(&self, request: Request) -> Vec<Part> {
        let flags = request.flags & !CMD_FLAG_FUA;
        match request.command {
            CMD_READ => {
                let allowed = if self.structured { CMD_FLAG_DF } else { 0 };
                if flags & !allowed != 0 {
                    return self.error(&request, Errno::Inval, "unsupported flags for READ");
                }
                if request.length > MAX_PAYLOAD {
                    return self.error(&request, Errno::Inval, "reads are limited to 32 MiB");
                }
                if !self.in_range(&request) {
                    return self.error(&request, Errno::Inval, "read beyond the end of the export");
                }
                self.read(&request, flags & CMD_FLAG_DF != 0).await
            }
            CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES => {
                self.error(&request, Errno::Perm, "the export is read-only")
            }
            CMD_FLUSH => {
                if flags != 0 {
                    return self.error(&request, Errno::Inval, "unsupported flags for FLUSH");
                }
                self.success(&request)
            }
            CMD_CACHE => {
                if flags != 0 {
                    return self.error(&request, Errno::Inval, "unsupported flags for CACHE");
                }
                if !self.in_range(&request) {
                    return self.error(
                        &request,
                        Errno::Inval,
                        "range beyond the end of the export",
                    );
                }
                if request.length > MAX_PAYLOAD {
                    return self.error(&request, Errno::Overflow, "prefetch is limited to 32 MiB");
                }
                match self.session.prefetch(request.offset, request.length).await {
                    Ok(()) => self.success(&request),
                    Err(error) => self.export_failed(&request, &error),
                }
            }
            CMD_BLOCK_STATUS => self.block_status(&request, flags).await,
            _ => self.error(&request, Errno::Inval, "unknown command"),
        }
    }

    async fn read(&self, request: &Request, one_chunk: bool) -> Vec<Part> {
        let segments = match self.session.read(request.offset, request.length).await {
            Ok(segments) => segments,
            Err(error) => return self.export_failed(request, &error),
        };
        let total: u64 = segments.iter().map(Segment::len).sum();
        let malformed = segments.iter().any(|s| match s {
            Segment::Data { bytes, range } => range.start > range.end || range.end > bytes.len(),
            Segment::Zeros(_) => false,
        });
        if malformed || total != u64::from(request.length) {
            let error = ExportError::new(
                "read",
                request.offset,
                u64::from(request.length),
                format!("the export answered with {total} bytes"),
            );
            return self.export_failed(request, &error);
        }
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(total, Ordering::Relaxed);
        let to_part = |segment: Segment| match segment {
            Segment::Data { bytes, range } => Part::Shared(bytes, range),
            Segment::Zeros(length) => Part::Zeros(length),
        };
        if !self.structured {
            let mut parts = vec![Part::Owned(
                protocol::simple_reply(request.cookie, None).to_vec(),
            )];
            parts.extend(segments.into_iter().filter(|s| !s.is_empty()).map(to_part));
            return parts;
        }
        // Runs of content: data (short zero runs inline) or holes.
        enum Run {
            Data(u64, u64, Vec<Part>),
            Hole(u64, u64),
        }
        let mut runs: Vec<Run> = Vec::new();
        let mut at = request.offset;
        for segment in segments {
            let length = segment.len();
            if length == 0 {
                continue;
            }
            let hole =
                matches!(segment, Segment::Zeros(_)) && !one_chunk && length >= SHORTEST_HOLE;
            match (runs.last_mut(), hole) {
                (Some(Run::Hole(_, run)), true) => *run += length,
                (_, true) => runs.push(Run::Hole(at, length)),
                (Some(Run::Data(_, run, parts)), false) => {
                    *run += length;
                    parts.push(to_part(segment));
                }
                (_, false) => runs.push(Run::Data(at, length, vec![to_part(segment)])),
            }
            at += length;
        }
        let mut parts = Vec::new();
        let count = runs.len();
        if count == 0 {
            parts.push(Part::Owned(
                protocol::structured_done(request.cookie).to_vec(),
            ));
        }
        for (i, run) in runs.into_iter().enumerate() {
            let done = i + 1 == count;
            match run {
                Run::Data(offset, length, data) => {
                    let length = u32::try_from(length).unwrap_or(u32::MAX);
                    parts.push(Part::Owned(
                        protocol::structured_data_header(request.cookie, offset, length, done)
                            .to_vec(),
                    ));
                    parts.extend(data);
                }
                Run::Hole(offset, length) => {
                    let length = u32::try_from(length).unwrap_or(u32::MAX);
                    parts.push(Part::Owned(
                        protocol::structured_hole(request.cookie, offset, length, done).to_vec(),
                    ));
                }
            }
        }
        parts
    }

    async fn block_status(&self, request: &Request, flags: u16) -> Vec<Part> {
        if !self.structured {
            return self.error(
                request,
                Errno::Inval,
                "block status needs structured replies",
            );
        }
        if flags & !CMD_FLAG_REQ_ONE != 0 {
            return self.error(request, Errno::Inval, "unsupported flags for BLOCK_STATUS");
        }
        if request.length == 0 || !self.in_range(request) {
            return self.error(
                request,
                Errno::Inval,
                "range empty or beyond the end of the export",
            );
        }
        let extents = match self.session.extents(request.offset, request.length).await {
            Ok(extents) => extents,
            Err(error) => return self.export_failed(request, &error),
        };
        let wanted = u64::from(request.length);
        let one = flags & CMD_FLAG_REQ_ONE != 0;
        let mut out: Vec<(u32, u32)> = Vec::new();
        let mut covered = 0u64;
        for extent in extents {
            if covered >= wanted || out.len() >= MAX_EXTENTS {
                break;
            }
            let length = extent.length.min(wanted - covered);
            if length == 0 {
                continue;
            }
            let status = if extent.zero {
                STATE_HOLE | STATE_ZERO
            } else {
                0
            };
            let length32 = u32::try_from(length).unwrap_or(u32::MAX);
            match out.last_mut() {
                Some((run, last)) if *last == status => *run += length32,
                _ => out.push((length32, status)),
            }
            covered += length;
            if one {
                break;
            }
        }
        if out.is_empty() {
            // Always a safe answer: data, status unknown.
            out.push((request.length, 0));
        }
        if one {
            out.truncate(1);
        }
        self.counters.block_status.fetch_add(1, Ordering::Relaxed);
        vec![Part::Owned(protocol::structured_block_status(
            request.cookie,
            BASE_ALLOCATION_ID,
            &out,
        ))]
    }
}
