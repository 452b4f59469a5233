//! `cairn verify`: every chunk of one or more indexes present, decodable, of the right digest and
//! length; a report of every bad chunk and the bytes it covers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_chunk_store::{ChunkSource, DigestAlgorithm, StoreError, to_hex};
use cairn_index::{ChunkIndex, Digest, Index};
use futures_util::StreamExt as _;
use futures_util::stream;
use serde_json::json;

use crate::Failure;
use crate::progress;
use crate::store::StoreSpec;

/// Chunks verified at once.
const VERIFY_CONCURRENCY: usize = 8;

/// Arguments of `cairn verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The store: pbs:PATH, castr:PATH or a PATH.
    #[arg(long, value_parser = StoreSpec::parse)]
    store: StoreSpec,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The indexes to verify.
    #[arg(required = true)]
    indexes: Vec<PathBuf>,
}

fn kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Missing { .. } => "missing",
        StoreError::Read { .. } => "unreadable",
        StoreError::LengthMismatch { .. } => "wrong-length",
        StoreError::DigestMismatch { .. } => "wrong-digest",
        _ => "corrupt",
    }
}

/// Runs `cairn verify`.
pub(crate) async fn run(args: &VerifyArgs, quiet: bool) -> Result<(), Failure> {
    let store = args.store.open()?;
    let mut reports = Vec::new();
    let mut bad_total = 0usize;
    for path in &args.indexes {
        let index = Index::open(path).map_err(Failure::data)?;
        let algorithm = match index.digest_algorithm() {
            cairn_index::DigestAlgorithm::Sha512_256 => DigestAlgorithm::Sha512_256,
            _ => DigestAlgorithm::Sha256,
        };
        let source = ChunkSource::new(Arc::clone(&store), algorithm);
        let mut unique: HashMap<Digest, (u64, Vec<(u64, u64)>)> = HashMap::new();
        for chunk in index.chunks() {
            unique
                .entry(chunk.digest)
                .or_insert((chunk.len(), Vec::new()))
                .1
                .push((chunk.start, chunk.end));
        }
        let bar = progress::bytes(index.image_size(), "verify", quiet || args.json);
        let checks = unique.iter().map(|(digest, (len, ranges))| {
            let source = source.clone();
            let covered: u64 = ranges.iter().map(|(s, e)| e - s).sum();
            async move {
                let len = usize::try_from(*len).unwrap_or(usize::MAX);
                (
                    digest,
                    ranges,
                    covered,
                    source.read(digest, len).await.err(),
                )
            }
        });
        let mut results = stream::iter(checks).buffer_unordered(VERIFY_CONCURRENCY);
        let mut bad = Vec::new();
        while let Some((digest, ranges, covered, error)) = results.next().await {
            bar.inc(covered);
            if let Some(error) = error {
                bad.push((*digest, ranges.clone(), error));
            }
        }
        bar.finish_and_clear();
        bad.sort_by_key(|(_, ranges, _)| ranges.first().copied());
        bad_total += bad.len();
        reports.push((path.clone(), index.chunk_count(), unique.len(), bad));
    }
    if args.json {
        let value = json!({
            "ok": bad_total == 0,
            "indexes": reports.iter().map(|(path, chunks, unique, bad)| json!({
                "index": path.display().to_string(),
                "chunks": chunks,
                "unique_chunks": unique,
                "bad_chunks": bad.iter().map(|(digest, ranges, error)| json!({
                    "digest": to_hex(digest),
                    "problem": kind(error),
                    "error": error.to_string(),
                    "ranges": ranges.iter().map(|(s, e)| json!([s, e])).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        for (path, chunks, unique, bad) in &reports {
            if bad.is_empty() {
                println!("{}: ok ({chunks} chunks, {unique} unique)", path.display());
            } else {
                println!(
                    "{}: {} bad of {unique} unique chunks",
                    path.display(),
                    bad.len()
                );
                for (digest, ranges, error) in bad {
                    let spans: Vec<String> =
                        ranges.iter().map(|(s, e)| format!("{s}..{e}")).collect();
                    println!(
                        "  {} chunk {} (image bytes {}): {error}",
                        kind(error),
                        to_hex(digest),
                        spans.join(", ")
                    );
                }
            }
        }
    }
    if bad_total > 0 {
        return Err(Failure::data(format!(
            "verification failed: {bad_total} bad chunks"
        )));
    }
    Ok(())
}
