//! An S3 server for tests and benchmarks: s3s over a folder (each subfolder a bucket, each
//! object a file at its key), with one access key, on 127.0.0.1.

use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Starts serving `root` on the current runtime, which serves until it shuts down; returns the
/// endpoint (`http://127.0.0.1:PORT`).
///
/// # Errors
/// If `root` is no folder or no port can be bound.
pub(crate) async fn serve_s3(
    root: &Path,
    access_key: &str,
    secret_key: &str,
) -> Result<String, String> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| format!("{}: {e:?}", root.display()))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind 127.0.0.1: {e}"))?;
    let endpoint = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    Ok(endpoint)
}
