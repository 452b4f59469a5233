//! `cairn serve-nbd`: backup images as NBD exports, for qemu, libnbd's tools and the kernel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_index::ChunkIndex;
use cairn_nbd::{Export, Server, ServerOptions};
use cairn_reader::nbd::NbdExport;
use cairn_reader::{ChunkReader, ReaderOptions, chunk_cache};

use crate::Failure;
use crate::interrupt::Stop;
use crate::store::StoreArgs;

/// The IANA port of NBD.
const DEFAULT_LISTEN: &str = "127.0.0.1:10809";

/// Arguments of `cairn serve-nbd`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeNbdArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The indexes to serve; each is an export named after its file name without the index
    /// extension (`drive-scsi0.img.fidx` is `drive-scsi0.img`).
    #[arg(required = true)]
    indexes: Vec<PathBuf>,
    /// The export name, instead of the file name (one index only).
    #[arg(long)]
    name: Option<String>,
    /// Where to listen: HOST:PORT (`0.0.0.0:10809` for every interface).
    #[arg(long, conflicts_with = "unix")]
    listen: Option<String>,
    /// Listen on a Unix socket at PATH instead of TCP.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// The chunk cache all exports and connections share.
    #[arg(long, value_parser = crate::backup::parse_size, default_value = "256MiB")]
    cache_size: u64,
    /// Connections served at once; more are refused.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Close a connection whose reply makes no progress for this long: its client stopped
    /// reading (each connection may hold at most 64 MiB of the 256 MiB of reads in flight).
    #[arg(long, value_name = "DURATION", value_parser = crate::backup::parse_duration, default_value = "30s")]
    write_timeout: std::time::Duration,
    /// Close a connection that sends nothing for this long with no request in progress; 0
    /// (the default) never does, since qemu and the kernel's client keep idle connections
    /// for as long as the disk is attached. Vanished peers are found by TCP keepalive.
    #[arg(long, value_name = "DURATION", value_parser = crate::backup::parse_duration, default_value = "0")]
    idle_timeout: std::time::Duration,
    /// Log every connection, with what it read and how much came from the cache.
    #[arg(long, short)]
    verbose: bool,
}

/// The export name of an index file: its name without the index extension.
pub(crate) fn export_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for extension in [".fidx", ".didx", ".caibx", ".caidx"] {
        if let Some(stem) = name.strip_suffix(extension)
            && !stem.is_empty()
        {
            return stem.to_owned();
        }
    }
    name
}

/// Log lines of a server (connections, chunks that cannot be served) on stderr: every
/// connection if `verbose`, only errors if `quiet`, else warnings.
pub(crate) fn install_logging(verbose: bool, quiet: bool) {
    let level = if verbose {
        tracing::Level::INFO
    } else if quiet {
        tracing::Level::ERROR
    } else {
        tracing::Level::WARN
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Runs `cairn serve-nbd`.
pub(crate) async fn run(args: &ServeNbdArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    if args.name.is_some() && args.indexes.len() > 1 {
        return Err(Failure::usage(
            "--name names one export; give one index with it",
        ));
    }
    install_logging(args.verbose, quiet);
    args.store.load_key(stop).await?;
    let store = args.store.open()?;
    let cache = chunk_cache(args.cache_size);
    let options = ReaderOptions::default().cache_bytes(args.cache_size);
    let mut exports: Vec<(String, Arc<dyn Export>)> = Vec::new();
    for path in &args.indexes {
        let index: Arc<dyn ChunkIndex> = Arc::new(
            args.store
                .open_index(path, stop)
                .await
                .map_err(|e| e.context(path))?,
        );
        let name = args.name.clone().unwrap_or_else(|| export_name(path));
        if exports.iter().any(|(n, _)| *n == name) {
            return Err(Failure::usage(format!(
                "two indexes would both be served as `{name}`; serve them from separate commands"
            )));
        }
        let source = args
            .store
            .source(Arc::clone(&store), index.digest_algorithm())?;
        let reader = ChunkReader::with_source(index, source, cache.clone(), options);
        exports.push((name, Arc::new(NbdExport::new(reader))));
    }
    let server_options = ServerOptions::default()
        .max_connections(args.max_connections)
        .write_timeout(args.write_timeout)
        .idle_timeout((!args.idle_timeout.is_zero()).then_some(args.idle_timeout));
    let server =
        Server::new(exports, server_options).map_err(|e| Failure::usage(crate::chain(&e)))?;
    let names: Vec<&str> = server.export_names().collect();
    let token = stop.token().clone();
    if let Some(path) = &args.unix {
        let listener = bind_unix(path)?;
        if !quiet {
            eprintln!(
                "cairn: serving {} on nbd+unix:///{}?socket={}; Ctrl-C stops",
                names.join(", "),
                names.first().copied().unwrap_or_default(),
                path.display()
            );
        }
        let served = server.serve_unix(listener, token).await;
        let _ = std::fs::remove_file(path);
        return served.map_err(Failure::error);
    }
    let address = args.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Failure::data(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| address.to_owned(), |a| a.to_string());
    if !quiet {
        eprintln!(
            "cairn: serving {} on nbd://{bound}/{}; Ctrl-C stops",
            names.join(", "),
            names.first().copied().unwrap_or_default()
        );
    }
    server
        .serve_tcp(listener, token)
        .await
        .map_err(Failure::error)
}

/// Binds a Unix socket at `path`, replacing a stale socket left there (never another file).
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, Failure> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Failure::usage(format!(
                "{}: exists and is not a socket; choose another --unix path",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Failure::data(format!(
                "{}: another server is listening there",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    tokio::net::UnixListener::bind(path)
        .map_err(|e| Failure::data(format!("cannot listen on {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_drop_the_index_extension() {
        for (path, name) in [
            ("/b/vm/100/drive-scsi0.img.fidx", "drive-scsi0.img"),
            ("root.pxar.didx", "root.pxar"),
            ("disk.caibx", "disk"),
            ("tree.caidx", "tree"),
            ("plain", "plain"),
            (".fidx", ".fidx"),
        ] {
            assert_eq!(export_name(Path::new(path)), name, "{path}");
        }
    }
}
