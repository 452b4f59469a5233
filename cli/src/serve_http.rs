//! `cairn serve-http`: any store, read-only over HTTP, in the casync layout (for casync,
//! desync and HTTP stores of cairn) and the PBS layout.

use cairn_chunk_store::serve::{ServeOptions, serve_http};

use crate::Failure;
use crate::interrupt::Stop;
use crate::store::StoreArgs;

/// Arguments of `cairn serve-http`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeHttpArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Where to listen: HOST:PORT (`0.0.0.0:8080` for every interface; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Close a connection whose response makes no progress for this long: its client stopped
    /// reading (responses hold at most 256 MiB of chunks at once, across connections).
    #[arg(long, value_name = "DURATION", value_parser = crate::backup::parse_duration, default_value = "30s")]
    write_timeout: std::time::Duration,
}

/// Runs `cairn serve-http`.
pub(crate) async fn run(args: &ServeHttpArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    crate::serve_nbd::install_logging(false, quiet);
    let store = args.store.open()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::data(format!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| args.listen.clone(), |a| a.to_string());
    if !quiet {
        eprintln!(
            "cairn: serving {} on http://{bound}/ (casync: /XXXX/ID.cacnk, PBS: /.chunks/XXXX/ID); Ctrl-C stops",
            store.name()
        );
    }
    let mut options = ServeOptions::default();
    options.max_connections = args.max_connections;
    options.write_timeout = args.write_timeout;
    serve_http(listener, store, options, stop.token().cancelled())
        .await
        .map_err(|e| Failure::data(format!("serving on {bound}: {e}")))
}
