//! `cairn info`: what an index holds.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use cairn_index::{ChunkIndex, Digest, Hex, Index, OpenOptions};
use serde_json::{Value, json};

use cairn_chunk_store::rfc3339_utc as rfc3339;

use crate::Failure;
use crate::interrupt::{Stop, unless_stopped};

/// Arguments of `cairn info`.
#[derive(Debug, clap::Args)]
pub(crate) struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The PBS encryption key the backup was made with: its fingerprint is shown, and the
    /// index's digests are the key's (its passphrase from PBS_ENCRYPTION_PASSWORD, else the
    /// terminal).
    #[arg(long, value_name = "FILE")]
    keyfile: Option<std::path::PathBuf>,
    /// The index file.
    index: PathBuf,
}

/// The figures `info` reports, computed in one pass over the chunks.
struct Summary {
    unique_chunks: usize,
    unique_bytes: u64,
    /// Length, first chunk and digest of the longest run of one repeated digest.
    longest_run: Option<(usize, usize, Digest)>,
}

fn summarise(index: &dyn ChunkIndex) -> Summary {
    let mut sizes: HashMap<Digest, u64> = HashMap::with_capacity(index.chunk_count());
    let mut longest_run: Option<(usize, usize, Digest)> = None;
    let mut run: Option<(usize, usize, Digest)> = None;
    for chunk in index.chunks() {
        sizes.entry(chunk.digest).or_insert(chunk.len());
        run = match run {
            Some((len, first, digest)) if digest == chunk.digest => Some((len + 1, first, digest)),
            _ => Some((1, chunk.index, chunk.digest)),
        };
        if run.map(|r| r.0) > longest_run.map(|r| r.0) {
            longest_run = run;
        }
    }
    Summary {
        unique_chunks: sizes.len(),
        unique_bytes: sizes.values().sum(),
        longest_run,
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(size: u64, unique_bytes: u64) -> f64 {
    if unique_bytes == 0 {
        1.0
    } else {
        size as f64 / unique_bytes as f64
    }
}

fn report(index: &Index, summary: &Summary, checksum_ok: Option<bool>) -> Value {
    let size = index.image_size();
    let mut value = json!({
        "file": index_path(index),
        "format": index.format().name(),
        "digest": index.digest_algorithm().name(),
        "size": size,
        "chunks": index.chunk_count(),
        "unique_chunks": summary.unique_chunks,
        "unique_bytes": summary.unique_bytes,
        "dedup_ratio": ratio(size, summary.unique_bytes),
        "checksum_ok": checksum_ok,
        "largest_run": summary.longest_run.map(|(len, first, digest)| json!({
            "chunks": len,
            "first_chunk": first,
            "digest": Hex(digest).to_string(),
        })),
    });
    match index {
        Index::Fixed(fixed) => {
            value["uuid"] = json!(fixed.header().uuid_hex());
            value["ctime"] = json!(fixed.header().ctime);
            value["chunk_size"] = json!(fixed.chunk_size());
        }
        Index::Dynamic(dynamic) => {
            value["uuid"] = json!(dynamic.header().uuid_hex());
            value["ctime"] = json!(dynamic.header().ctime);
        }
        Index::Casync(casync) => {
            let p = casync.params();
            value["chunk_size_min"] = json!(p.min);
            value["chunk_size_avg"] = json!(p.avg);
            value["chunk_size_max"] = json!(p.max);
            value["feature_flags"] = json!(format!("{:#018x}", p.flags));
        }
        _ => {}
    }
    value
}

fn index_path(index: &Index) -> String {
    index.origin().to_string()
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64;
    let mut unit = "bytes";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if unit == "bytes" {
        format!("{n} bytes")
    } else {
        format!("{n} bytes ({value:.1} {unit})")
    }
}

fn text(value: &Value) -> String {
    let mut out = String::new();
    let mut line = |key: &str, text: String| {
        out.push_str(&format!("{key:<15} {text}\n"));
    };
    let field = |key: &str| value.get(key).filter(|v| !v.is_null());
    line(
        "file:",
        value["file"].as_str().unwrap_or_default().to_owned(),
    );
    line(
        "format:",
        value["format"].as_str().unwrap_or_default().to_owned(),
    );
    line(
        "digest:",
        value["digest"].as_str().unwrap_or_default().to_owned(),
    );
    if let Some(fingerprint) = field("key_fingerprint").and_then(Value::as_str) {
        line("key:", format!("fingerprint {fingerprint}"));
    }
    if let Some(uuid) = field("uuid").and_then(Value::as_str) {
        line("uuid:", uuid.to_owned());
    }
    if let Some(ctime) = field("ctime").and_then(Value::as_i64) {
        line("ctime:", format!("{ctime} ({})", rfc3339(ctime)));
    }
    if let Some(cs) = field("chunk_size").and_then(Value::as_u64) {
        line("chunk size:", bytes(cs));
    }
    if let Some(min) = field("chunk_size_min").and_then(Value::as_u64) {
        let avg = value["chunk_size_avg"].as_u64().unwrap_or_default();
        let max = value["chunk_size_max"].as_u64().unwrap_or_default();
        line("chunk sizes:", format!("min {min}, avg {avg}, max {max}"));
    }
    line(
        "image size:",
        bytes(value["size"].as_u64().unwrap_or_default()),
    );
    line("chunks:", value["chunks"].to_string());
    line(
        "unique chunks:",
        format!(
            "{}, {}",
            value["unique_chunks"],
            bytes(value["unique_bytes"].as_u64().unwrap_or_default())
        ),
    );
    if let Some(run) = field("largest_run") {
        let first = run["first_chunk"].as_u64().unwrap_or_default();
        let len = run["chunks"].as_u64().unwrap_or_default();
        line(
            "largest run:",
            format!(
                "{len} chunks of {} (chunks {first} to {})",
                run["digest"].as_str().unwrap_or_default(),
                first + len.saturating_sub(1)
            ),
        );
    }
    let checksum = match value["checksum_ok"].as_bool() {
        Some(true) => "verified".to_owned(),
        Some(false) => "MISMATCH".to_owned(),
        None => "none in this format".to_owned(),
    };
    line("checksum:", checksum);
    line(
        "dedup ratio:",
        format!("{:.2}", value["dedup_ratio"].as_f64().unwrap_or(1.0)),
    );
    out
}

/// Runs `cairn info`. The index is read and summed up off the command's thread: a FIFO or a
/// stalled pipe given as INDEX waits there, and the first signal ends the command.
pub(crate) async fn run(args: &InfoArgs, stop: &Stop) -> Result<(), Failure> {
    let path = args.index.clone();
    let (mut value, checksum_ok) = unless_stopped(stop, "nothing was shown", move || {
        // Open without the checksum check so a mismatch is reported, not just refused.
        let options = OpenOptions::new().verify_checksum(false);
        let index = Index::open_with(&path, &options).map_err(Failure::error)?;
        let checksum_ok = index.checksum_matches();
        let summary = summarise(index.as_dyn());
        Ok((report(&index, &summary, checksum_ok), checksum_ok))
    })
    .await?;
    if let Some(path) = args.keyfile.clone() {
        let key = unless_stopped(stop, "nothing was shown", move || {
            crate::key::load_key(&path)
        })
        .await?;
        value["digest"] = Value::String(key.digest_algorithm().name().to_owned());
        value["key_fingerprint"] = Value::String(key.fingerprint().to_string());
    }
    let printed = if args.json {
        serde_json::to_string(&value).unwrap_or_default() + "\n"
    } else {
        text(&value)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(printed.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::data(format!("cannot write to stdout: {e}")))?;
    if checksum_ok == Some(false) {
        return Err(Failure::data(format!(
            "{}: index checksum mismatch: the header does not match the entries",
            args.index.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_715_091_951), "2024-05-07T14:25:51Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(5), "5 bytes");
        assert_eq!(bytes(104_859_232), "104859232 bytes (100.0 MiB)");
    }
}
