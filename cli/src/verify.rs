//! `cairn verify`: every chunk of one or more indexes present, decodable, of the right digest and
//! length; a report of every bad chunk and the bytes it covers.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_chunk_store::{CodecError, StoreError, to_hex};
use cairn_index::ChunkIndex as _;
use cairn_reader::{VerifyOptions, VerifyReport, verify_source};
use serde_json::json;

use crate::Failure;
use crate::interrupt::Stop;
use crate::progress;
use crate::store::StoreArgs;

/// Chunks verified at once.
const VERIFY_CONCURRENCY: usize = 8;

/// Arguments of `cairn verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
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
        // Decoding stopped at the length the index gives: the chunk is longer than that.
        StoreError::Corrupt {
            source:
                CodecError::TooLarge {
                    what: "decoded chunk",
                    ..
                },
            ..
        } => "wrong-length",
        StoreError::DigestMismatch { .. } => "wrong-digest",
        _ => "corrupt",
    }
}

/// One index's report.
struct Checked {
    path: PathBuf,
    report: VerifyReport,
}

/// Runs `cairn verify`.
pub(crate) async fn run(args: &VerifyArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    args.store.load_key(stop).await?;
    let store = args.store.open()?;
    let mut checked = Vec::new();
    for path in &args.indexes {
        let index = args.store.open_index(path, stop).await?;
        let bar = progress::bytes(index.image_size(), "verify", quiet || args.json);
        let progress = |bytes| bar.inc(bytes);
        let options = VerifyOptions::default().concurrency(VERIFY_CONCURRENCY);
        let source = args
            .store
            .source(Arc::clone(&store), index.digest_algorithm())?;
        let report = verify_source(&index, &source, options, &progress, stop.token())
            .await
            .map_err(|e| crate::restore::failure(e).context(path))?;
        bar.finish_and_clear();
        checked.push(Checked {
            path: path.clone(),
            report,
        });
    }
    if args.json {
        println!("{}", as_json(&checked));
    } else {
        print_text(&checked);
    }
    let bad_total: usize = checked.iter().map(|c| c.report.bad.len()).sum();
    if bad_total > 0 {
        return Err(Failure::data(format!(
            "verification failed: {bad_total} bad chunks"
        )));
    }
    Ok(())
}

fn as_json(checked: &[Checked]) -> serde_json::Value {
    json!({
        "ok": checked.iter().all(|c| c.report.is_ok()),
        "indexes": checked.iter().map(|c| json!({
            "index": c.path.display().to_string(),
            "chunks": c.report.chunks,
            "unique_chunks": c.report.unique_chunks,
            "bad_chunks": c.report.bad.iter().map(|bad| json!({
                "digest": to_hex(&bad.digest),
                "problem": kind(&bad.error),
                "error": crate::chain(&bad.error),
                "ranges": bad.ranges.iter().map(|r| json!([r.start, r.end])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn print_text(checked: &[Checked]) {
    for Checked { path, report } in checked {
        if report.is_ok() {
            println!(
                "{}: ok ({} chunks, {} unique)",
                path.display(),
                report.chunks,
                report.unique_chunks
            );
            continue;
        }
        println!(
            "{}: {} bad of {} unique chunks",
            path.display(),
            report.bad.len(),
            report.unique_chunks
        );
        // The error names the chunk's digest, its store and where it is.
        for bad in &report.bad {
            let spans: Vec<String> = bad
                .ranges
                .iter()
                .map(|r| format!("{}..{}", r.start, r.end))
                .collect();
            println!(
                "  {} (image bytes {}): {}",
                kind(&bad.error),
                spans.join(", "),
                crate::chain(&bad.error)
            );
        }
    }
}
