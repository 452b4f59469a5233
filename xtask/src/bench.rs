//! `cargo xtask bench`: cairn end to end against its peers and its limit, side by side in one
//! run, on a deterministic mixed image. Drives the built `cairn` binary, the `bench_probe`
//! example (the in-process measurements) and the peers' own tools (`casync`, `qemu-nbd`,
//! `nbdcopy`); writes `target/bench/report.md` and `target/bench/report.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{StepResult, cargo, workspace_root};

/// `cargo xtask bench` options.
#[derive(Debug, Clone)]
pub(crate) struct BenchOptions {
    size: String,
    runs: usize,
    profile: String,
    out_dir: Option<PathBuf>,
}

impl BenchOptions {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            size: "1GiB".to_owned(),
            runs: 3,
            profile: "release".to_owned(),
            out_dir: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--size" => options.size = value()?.clone(),
                "--runs" => {
                    options.runs = value()?
                        .parse()
                        .map_err(|e| format!("--runs: {e}"))
                        .and_then(|n: usize| {
                            if n == 0 {
                                Err("--runs must be at least 1".to_owned())
                            } else {
                                Ok(n)
                            }
                        })?;
                }
                "--profile" => {
                    let profile = value()?;
                    if profile != "release" && profile != "dev" {
                        return Err(format!("--profile is release or dev, not {profile}"));
                    }
                    options.profile.clone_from(profile);
                }
                "--out-dir" => options.out_dir = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(options)
    }
}

/// The measurements of one run, by name.
type Run = BTreeMap<String, f64>;

pub(crate) fn run(options: &BenchOptions) -> StepResult {
    let root = workspace_root();
    let mut build = vec!["build", "--locked", "--workspace", "--all-features"];
    if options.profile == "release" {
        build.push("--release");
    }
    build.extend(["--bin", "cairn", "--example", "bench_probe"]);
    eprintln!(
        "bench: building cairn and bench_probe ({} profile)",
        options.profile
    );
    cargo(&build, &[])?;
    let bin_dir = root.join("target").join(if options.profile == "release" {
        "release"
    } else {
        "debug"
    });
    let tools = Tools {
        cairn: bin_dir.join("cairn"),
        probe: bin_dir.join("examples/bench_probe"),
    };
    for tool in ["casync"] {
        if !on_path(tool) {
            return Err(format!(
                "{tool} is not installed (apt-get install {tool}); the bench compares against it"
            ));
        }
    }
    let bench_dir = root.join("target/bench");
    let data = bench_dir.join(format!("data-{}", options.size));
    make_data(&tools, &data, &options.size)?;
    let out_dir = options.out_dir.clone().unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() { shm } else { bench_dir.clone() }
    });
    let output = out_dir.join(format!("cairn-bench-{}.img", std::process::id()));
    let image_bytes = std::fs::metadata(data.join("sample.img"))
        .map_err(|e| format!("{}: {e}", data.join("sample.img").display()))?
        .len();
    let small = image_bytes < (256 << 20);
    let mut runs = Vec::new();
    for round in 1..=options.runs {
        eprintln!("bench: run {round} of {}", options.runs);
        let mut run = Run::new();
        measure_restores(&tools, &data, &output, image_bytes, &mut run)?;
        measure_limits(&tools, &data, &output, &mut run)?;
        measure_random(&tools, &data, small, &mut run)?;
        measure_nbd(&tools, &data, image_bytes, &mut run)?;
        measure_s3(&tools, &data, &output, image_bytes, &mut run)?;
        runs.push(run);
    }
    let _ = std::fs::remove_file(&output);
    report(&bench_dir, options, image_bytes, &out_dir, &runs)
}

struct Tools {
    cairn: PathBuf,
    probe: PathBuf,
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command` to success; its standard output.
fn output_of(command: &mut Command) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("could not start {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The image, its PBS datastore with `.fidx` and `.didx`, and a casync store made by `casync
/// make`; made once per size and kept (a `complete` file marks it whole).
fn make_data(tools: &Tools, data: &Path, size: &str) -> StepResult {
    if data.join("complete").is_file() {
        return Ok(());
    }
    eprintln!(
        "bench: making the {size} image and its stores in {}",
        data.display()
    );
    let _ = std::fs::remove_dir_all(data);
    if let Some(parent) = data.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    output_of(
        Command::new(&tools.cairn)
            .args(["-q", "demo", "--size", size, "--keep"])
            .arg(data),
    )?;
    for restored in ["restored-fidx.img", "restored-caibx.img"] {
        let _ = std::fs::remove_file(data.join(restored));
    }
    output_of(
        Command::new(&tools.cairn)
            .args(["-q", "backup", "--format", "didx", "--store"])
            .arg(data.join("pbs-datastore"))
            .arg(data.join("sample.img"))
            .arg(data.join("sample.didx")),
    )?;
    output_of(
        Command::new("casync")
            .arg("make")
            .arg(format!("--store={}", data.join("casync.castr").display()))
            .arg(data.join("casync.caibx"))
            .arg(data.join("sample.img")),
    )?;
    std::fs::write(data.join("complete"), size).map_err(|e| e.to_string())
}

/// Wall seconds and peak resident memory (VmHWM, MiB) of `command`, which must succeed. The
/// high-water mark is read from /proc every 2 ms while the process lives; it only grows, so the
/// last reading is the peak but for what the final 2 ms added.
fn timed_with_peak(command: &mut Command) -> Result<(f64, f64), String> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {command:?}: {e}"))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for {command:?}: {e}")),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        return Err(format!("{command:?} failed ({status}): {}", stderr.trim()));
    }
    Ok((seconds, peak_kib as f64 / 1024.0))
}

const CACHE_MIB: f64 = 256.0;

fn measure_restores(
    tools: &Tools,
    data: &Path,
    output: &Path,
    image_bytes: u64,
    run: &mut Run,
) -> StepResult {
    let mb = image_bytes as f64 / 1e6;
    let jobs: [(&str, Command); 4] = [
        ("casync_extract", {
            let mut c = Command::new("casync");
            c.arg("extract")
                .arg(format!("--store={}", data.join("casync.castr").display()))
                .arg(data.join("casync.caibx"))
                .arg(output);
            c
        }),
        (
            "restore_caibx",
            cairn_restore(tools, data, "casync.castr", "casync.caibx", output),
        ),
        (
            "restore_fidx",
            cairn_restore(tools, data, "pbs-datastore", "sample.fidx", output),
        ),
        (
            "restore_didx",
            cairn_restore(tools, data, "pbs-datastore", "sample.didx", output),
        ),
    ];
    // The physical baseline of the write side: the raw image copied to where the restores go.
    let _ = std::fs::remove_file(output);
    let started = Instant::now();
    std::fs::copy(data.join("sample.img"), output)
        .map_err(|e| format!("copying the image to {}: {e}", output.display()))?;
    let copy_mbps = mb / started.elapsed().as_secs_f64();
    eprintln!("  copy_image       {copy_mbps:>7.0} MB/s");
    run.insert("copy_image_mbps".to_owned(), copy_mbps);
    for (name, mut command) in jobs {
        let _ = std::fs::remove_file(output);
        let (seconds, peak) = timed_with_peak(&mut command)?;
        let written = std::fs::metadata(output).map_or(0, |m| m.len());
        if written != image_bytes {
            return Err(format!(
                "{name} wrote {written} bytes to {}, not the image's {image_bytes}",
                output.display()
            ));
        }
        eprintln!(
            "  {name:<16} {:>7.0} MB/s  peak {peak:.0} MiB",
            mb / seconds
        );
        run.insert(format!("{name}_mbps"), mb / seconds);
        run.insert(format!("{name}_peak_rss_mib"), peak);
    }
    let _ = std::fs::remove_file(output);
    Ok(())
}

fn cairn_restore(tools: &Tools, data: &Path, store: &str, index: &str, output: &Path) -> Command {
    let mut c = Command::new(&tools.cairn);
    c.args(["restore", "-q", "--cache-size", "256MiB", "--store"])
        .arg(data.join(store))
        .arg(data.join(index))
        .arg(output);
    c
}

fn probe_json(tools: &Tools, args: &[&str], data: &Path) -> Result<Value, String> {
    let out = output_of(Command::new(&tools.probe).args(args).current_dir(data))?;
    serde_json::from_str(out.trim())
        .map_err(|e| format!("bench_probe {args:?} printed {out:?}: {e}"))
}

fn number(value: &Value, key: &str) -> Result<f64, String> {
    value
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("no number {key} in {value}"))
}

/// The limits of each restore: decode + verify of every unique chunk in memory on all cores,
/// writing nothing; and the same writing each chunk wherever the image holds it to `output`
/// (the physical bound of a restore to that place on this machine).
fn measure_limits(tools: &Tools, data: &Path, output: &Path, run: &mut Run) -> StepResult {
    let written = output.to_string_lossy();
    for (name, store, index) in [
        ("caibx", "casync.castr", "casync.caibx"),
        ("fidx", "pbs-datastore", "sample.fidx"),
        ("didx", "pbs-datastore", "sample.didx"),
    ] {
        let limit = probe_json(tools, &["limit", store, index], data)?;
        let mbps = number(&limit, "mbps")?;
        let with_writes = probe_json(tools, &["limit", store, index, "--write", &written], data);
        let _ = std::fs::remove_file(output);
        let write_mbps = number(&with_writes?, "mbps")?;
        eprintln!(
            "  limit_{name:<10} {mbps:>7.0} MB/s, writing {write_mbps:>5.0} MB/s  ({} unique \
             chunks, {})",
            limit["unique_chunks"], limit["digest"]
        );
        run.insert(format!("limit_{name}_mbps"), mbps);
        run.insert(format!("write_limit_{name}_mbps"), write_mbps);
    }
    Ok(())
}

fn measure_random(tools: &Tools, data: &Path, small: bool, run: &mut Run) -> StepResult {
    let (warm_reads, cold_reads) = if small {
        ("200000", "512")
    } else {
        ("2000000", "4096")
    };
    for tasks in [1, 2, 8, 64] {
        let tasks_arg = tasks.to_string();
        for (warm, reads) in [(true, warm_reads), (false, cold_reads)] {
            let mut args = vec![
                "random",
                "pbs-datastore",
                "sample.fidx",
                "--tasks",
                &tasks_arg,
                "--reads",
                reads,
            ];
            if warm {
                args.push("--warm");
            }
            let result = probe_json(tools, &args, data)?;
            let per_s = number(&result, "reads_per_s")?;
            let kind = if warm { "warm" } else { "cold" };
            eprintln!("  random 4K {kind} {tasks:>2} tasks {per_s:>10.0} reads/s");
            run.insert(format!("random_read_4k_{kind}_{tasks}_tasks_per_s"), per_s);
        }
    }
    Ok(())
}

/// A process that is killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) -> StepResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(format!("{} did not appear", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `nbdcopy` of the image from `cairn serve-nbd` (a new server, cold cache) and from `qemu-nbd`
/// serving the raw image, if both tools are installed.
fn measure_nbd(tools: &Tools, data: &Path, image_bytes: u64, run: &mut Run) -> StepResult {
    if !(on_path("nbdcopy") && on_path("qemu-nbd")) {
        eprintln!("  nbd: skipped (nbdcopy or qemu-nbd is not installed)");
        return Ok(());
    }
    let mb = image_bytes as f64 / 1e6;
    let sockets = tempdir()?;
    let copy = |socket: &Path, name: &str| -> Result<f64, String> {
        let started = Instant::now();
        output_of(
            Command::new("nbdcopy")
                .arg(format!("nbd+unix:///{name}?socket={}", socket.display()))
                .arg("null:"),
        )?;
        Ok(mb / started.elapsed().as_secs_f64())
    };
    let cairn_socket = sockets.join("cairn.sock");
    let cairn = Server(
        Command::new(&tools.cairn)
            .args(["-q", "serve-nbd", "--cache-size", "256MiB", "--store"])
            .arg(data.join("pbs-datastore"))
            .arg("--unix")
            .arg(&cairn_socket)
            .arg(data.join("sample.fidx"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start cairn serve-nbd: {e}"))?,
    );
    wait_for(&cairn_socket)?;
    let cold = copy(&cairn_socket, "sample")?;
    let warm = copy(&cairn_socket, "sample")?;
    drop(cairn);
    let qemu_socket = sockets.join("qemu.sock");
    let qemu = Server(
        Command::new("qemu-nbd")
            .args(["-r", "-f", "raw", "-t", "-e", "8", "-k"])
            .arg(&qemu_socket)
            .arg(data.join("sample.img"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start qemu-nbd: {e}"))?,
    );
    wait_for(&qemu_socket)?;
    let qemu_mbps = copy(&qemu_socket, "")?;
    drop(qemu);
    let _ = std::fs::remove_dir_all(&sockets);
    eprintln!(
        "  nbdcopy          cairn cold {cold:.0} MB/s, warm {warm:.0} MB/s, qemu-nbd {qemu_mbps:.0} MB/s"
    );
    run.insert("nbd_cairn_cold_mbps".to_owned(), cold);
    run.insert("nbd_cairn_warm_mbps".to_owned(), warm);
    run.insert("nbd_qemu_nbd_mbps".to_owned(), qemu_mbps);
    Ok(())
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "cairn-bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Restore of the `.fidx` from an S3 server (s3s over a folder, in the probe's process) holding
/// the same chunks, beside the local restore.
fn measure_s3(
    tools: &Tools,
    data: &Path,
    output: &Path,
    image_bytes: u64,
    run: &mut Run,
) -> StepResult {
    let root = data.join("s3");
    if !root.join("complete").is_file() {
        let _ = std::fs::remove_dir_all(&root);
        link_tree(&data.join("pbs-datastore"), &root.join("bench/ds"))?;
        std::fs::write(root.join("complete"), "").map_err(|e| e.to_string())?;
    }
    let mut server = Command::new(&tools.probe)
        .arg("s3-serve")
        .arg(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start the S3 server: {e}"))?;
    let mut endpoint = String::new();
    if let Some(stdout) = server.stdout.take() {
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut endpoint);
    }
    let server = Server(server);
    let endpoint = endpoint.trim().to_owned();
    if !endpoint.starts_with("http://") {
        return Err(format!(
            "the S3 server printed {endpoint:?}, not its endpoint"
        ));
    }
    let _ = std::fs::remove_file(output);
    let (seconds, peak) = timed_with_peak(
        Command::new(&tools.cairn)
            .args([
                "restore",
                "-q",
                "--cache-size",
                "256MiB",
                "--store",
                "s3://bench/ds",
            ])
            .args(["--s3-endpoint", &endpoint, "--s3-allow-http"])
            .arg(data.join("sample.fidx"))
            .arg(output)
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL"),
    )?;
    drop(server);
    let _ = std::fs::remove_file(output);
    let mbps = image_bytes as f64 / 1e6 / seconds;
    eprintln!("  restore_fidx_s3  {mbps:>7.0} MB/s  peak {peak:.0} MiB");
    run.insert("restore_fidx_s3_mbps".to_owned(), mbps);
    Ok(())
}

/// `to` as a tree of hard links to the files of `from` (copies where linking fails).
fn link_tree(from: &Path, to: &Path) -> StepResult {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The table's rows: (key of the figure, what it is).
const ROWS: &[(&str, &str)] = &[
    (
        "copy_image_mbps",
        "copy of the raw image to the same place (std::fs::copy), MB/s",
    ),
    (
        "casync_extract_mbps",
        "casync extract (casync make's store), MB/s",
    ),
    (
        "restore_caibx_mbps",
        "cairn restore, same .caibx and store, MB/s",
    ),
    (
        "restore_fidx_mbps",
        "cairn restore, PBS datastore, .fidx, MB/s",
    ),
    (
        "restore_didx_mbps",
        "cairn restore, PBS datastore, .didx, MB/s",
    ),
    (
        "restore_fidx_s3_mbps",
        "cairn restore, .fidx from S3 (s3s, same host), MB/s",
    ),
    (
        "limit_caibx_mbps",
        "limit: decode + verify of every unique chunk, .caibx, MB/s",
    ),
    ("limit_fidx_mbps", "limit, .fidx, MB/s"),
    ("limit_didx_mbps", "limit, .didx, MB/s"),
    (
        "write_limit_caibx_mbps",
        "write limit: the limit, each chunk also written where the image holds it, .caibx, MB/s",
    ),
    ("write_limit_fidx_mbps", "write limit, .fidx, MB/s"),
    ("write_limit_didx_mbps", "write limit, .didx, MB/s"),
    (
        "casync_extract_peak_rss_mib",
        "peak RSS, casync extract, MiB",
    ),
    (
        "restore_caibx_peak_rss_mib",
        "peak RSS, cairn restore .caibx, MiB",
    ),
    (
        "restore_fidx_peak_rss_mib",
        "peak RSS, cairn restore .fidx, MiB",
    ),
    (
        "restore_didx_peak_rss_mib",
        "peak RSS, cairn restore .didx, MiB",
    ),
    (
        "nbd_qemu_nbd_mbps",
        "nbdcopy from qemu-nbd (raw image), MB/s",
    ),
    (
        "nbd_cairn_cold_mbps",
        "nbdcopy from cairn serve-nbd, cold cache, MB/s",
    ),
    (
        "nbd_cairn_warm_mbps",
        "nbdcopy from cairn serve-nbd, warm, MB/s",
    ),
];

fn report(
    bench_dir: &Path,
    options: &BenchOptions,
    image_bytes: u64,
    out_dir: &Path,
    runs: &[Run],
) -> StepResult {
    let mut keys: Vec<String> = runs.iter().flat_map(|r| r.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    let mut medians = BTreeMap::new();
    let mut minimums = BTreeMap::new();
    for key in &keys {
        let values: Vec<f64> = runs.iter().filter_map(|r| r.get(key).copied()).collect();
        minimums.insert(
            key.clone(),
            values.iter().copied().fold(f64::INFINITY, f64::min),
        );
        medians.insert(key.clone(), median(values));
    }
    let m = |key: &str| medians.get(key).copied().unwrap_or(f64::NAN);
    let ratios = [
        (
            "restore_caibx_vs_casync",
            m("restore_caibx_mbps") / m("casync_extract_mbps"),
            2.5,
        ),
        (
            "restore_caibx_vs_limit",
            m("restore_caibx_mbps") / m("limit_caibx_mbps"),
            0.85,
        ),
        (
            "restore_fidx_vs_limit",
            m("restore_fidx_mbps") / m("limit_fidx_mbps"),
            0.85,
        ),
        (
            "restore_didx_vs_limit",
            m("restore_didx_mbps") / m("limit_didx_mbps"),
            0.85,
        ),
        (
            "restore_caibx_vs_write_limit",
            m("restore_caibx_mbps") / m("write_limit_caibx_mbps"),
            0.85,
        ),
        (
            "restore_fidx_vs_write_limit",
            m("restore_fidx_mbps") / m("write_limit_fidx_mbps"),
            0.85,
        ),
        (
            "restore_didx_vs_write_limit",
            m("restore_didx_mbps") / m("write_limit_didx_mbps"),
            0.85,
        ),
        (
            "restore_fidx_peak_rss_vs_bound",
            m("restore_fidx_peak_rss_mib") / (CACHE_MIB + 64.0),
            1.0,
        ),
        (
            "random_read_4k_warm_vs_goal",
            m("random_read_4k_warm_64_tasks_per_s") / 2e6,
            1.0,
        ),
    ];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# cairn bench\n\n`cargo xtask bench --size {} --runs {} --profile {}`: a {:.0} MiB mixed \
         image (random, repeated and zero regions), restores written to {}, chunk files in the \
         page cache, cairn's cache {CACHE_MIB:.0} MiB and empty at the start of each restore. \
         Median and minimum of {} runs.\n",
        options.size,
        options.runs,
        options.profile,
        image_bytes as f64 / 1048576.0,
        out_dir.display(),
        runs.len()
    );
    let _ = writeln!(md, "| what | median | min |\n|---|---|---|");
    for (key, what) in ROWS {
        if let Some(value) = medians.get(*key) {
            let _ = writeln!(md, "| {what} | {value:.0} | {:.0} |", minimums[*key]);
        }
    }
    for tasks in [1, 2, 8, 64] {
        for kind in ["warm", "cold"] {
            let key = format!("random_read_4k_{kind}_{tasks}_tasks_per_s");
            if let Some(value) = medians.get(&key) {
                let _ = writeln!(
                    md,
                    "| random 4 KiB read_at, {kind}, {tasks} tasks, reads/s | {value:.0} | {:.0} |",
                    minimums[&key]
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\n| ratio (medians) | value | goal | |\n|---|---|---|---|"
    );
    for (name, value, goal) in &ratios {
        let verdict = if name.ends_with("_vs_bound") {
            if *value <= *goal { "met" } else { "missed" }
        } else if *value >= *goal {
            "met"
        } else {
            "missed"
        };
        let relation = if name.ends_with("_vs_bound") {
            "≤"
        } else {
            "≥"
        };
        let _ = writeln!(
            md,
            "| {name} | {value:.2} | {relation} {goal} | {verdict} |"
        );
    }
    print!("\n{md}");
    let mut figures = serde_json::Map::new();
    for (key, value) in &medians {
        figures.insert(key.clone(), json!(value));
    }
    for (name, value, _) in &ratios {
        figures.insert((*name).to_owned(), json!(value));
    }
    figures.insert(
        "random_read_4k_warm_per_s".to_owned(),
        json!(m("random_read_4k_warm_64_tasks_per_s")),
    );
    figures.insert("cache_capacity_mib".to_owned(), json!(CACHE_MIB));
    figures.insert("image_bytes".to_owned(), json!(image_bytes));
    figures.insert("runs".to_owned(), json!(runs.len()));
    let report = json!({
        "command": format!("cargo xtask bench --size {} --runs {} --profile {}", options.size, options.runs, options.profile),
        "figures": figures,
        "minimums": minimums,
        "runs": runs,
    });
    // The named figures also at the top level, where a script looks first.
    let mut top = figures.clone();
    if let Value::Object(rest) = report {
        top.extend(rest);
    }
    std::fs::create_dir_all(bench_dir).map_err(|e| e.to_string())?;
    std::fs::write(bench_dir.join("report.md"), &md).map_err(|e| e.to_string())?;
    let text = serde_json::to_string_pretty(&Value::Object(top)).map_err(|e| e.to_string())?;
    std::fs::write(bench_dir.join("report.json"), text).map_err(|e| e.to_string())?;
    eprintln!(
        "bench: wrote {} and {}",
        bench_dir.join("report.md").display(),
        bench_dir.join("report.json").display()
    );
    check_report(&bench_dir.join("report.json"))
}

/// The keys every report must carry, each a finite number.
const REQUIRED: &[&str] = &[
    "casync_extract_mbps",
    "restore_caibx_mbps",
    "restore_fidx_mbps",
    "limit_caibx_mbps",
    "limit_fidx_mbps",
    "restore_caibx_vs_casync",
    "restore_caibx_vs_limit",
    "restore_fidx_vs_limit",
    "random_read_4k_warm_per_s",
    "restore_fidx_peak_rss_mib",
    "cache_capacity_mib",
];

fn check_report(path: &Path) -> StepResult {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let report: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for key in REQUIRED {
        match report.get(*key).and_then(Value::as_f64) {
            Some(v) if v.is_finite() && v > 0.0 => {}
            other => return Err(format!("{}: {key} is {other:?}", path.display())),
        }
    }
    Ok(())
}
