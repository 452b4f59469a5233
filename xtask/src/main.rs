//! `cargo xtask`: the one door to cairn's automation. `cargo xtask ci` runs exactly what CI runs.

mod bench;
mod fuzz;
mod layering;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci         everything CI runs, in order, stopping at the first failure:
             fmt check, clippy (-D warnings), tests, docs (-D warnings), the cache's
             shuttle model checking, every benchmark built and run once (test profile),
             layering check, fuzz build and a 10 s smoke run of every fuzz target, and a
             smoke run of the end-to-end bench (bench --size 64MiB --runs 1 --profile dev).
             The tests run with CAIRN_REQUIRE_SHARED=1 and CAIRN_REQUIRE_INTEROP=1, so a
             missing ../shared test file or a missing casync binary fails instead of skipping
  bench [--size SIZE] [--runs N] [--profile release|dev] [--out-dir DIR]
             end to end, side by side in one run on a deterministic mixed image (default
             1GiB, 3 runs; median and minimum): casync extract against cairn restore from
             casync make's store, cairn restore from a PBS datastore (.fidx, .didx) and from
             S3, the decode + verify limit, random 4 KiB read_at (warm and cold, 1/2/8/64
             tasks), peak RSS of every restore, nbdcopy from serve-nbd and qemu-nbd. Prints
             a table; writes target/bench/report.md and target/bench/report.json. Restores
             are written to DIR (default /dev/shm). Needs casync; nbdcopy and qemu-nbd for
             the NBD rows
  layering   only the layering check (which cairn crate may depend on which)
  fuzz [TARGET] [--seconds N] [--jobs N] [--asan]
             run one fuzz target, or every target in turn, for N seconds each (default 60)
             with N parallel jobs (default 1); installs cargo-fuzz if missing; stable Rust,
             no sanitizer unless --asan. Prints executions, coverage and crashes per target
             and fails if any target crashed, naming the input.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") if args.len() == 1 => ci(),
        Some("layering") if args.len() == 1 => layering_step(),
        Some("bench") => match bench::BenchOptions::parse(&args[1..]) {
            Ok(options) => bench::run(&options),
            Err(message) => {
                eprintln!("xtask bench: {message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        Some("fuzz") => match fuzz::FuzzOptions::parse(&args[1..]) {
            Ok(options) => fuzz::run(&options),
            Err(message) => {
                eprintln!("xtask fuzz: {message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nxtask: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A failed step, as a message for the user.
pub(crate) type StepResult = Result<(), String>;

/// A named step of `cargo xtask ci`.
type Step = (&'static str, fn() -> StepResult);

fn ci() -> StepResult {
    let started = Instant::now();
    let steps: [Step; 9] = [
        ("format check (cargo fmt --check)", || {
            cargo(&["fmt", "--all", "--check"], &[])
        }),
        ("lints (cargo clippy -D warnings)", || {
            cargo(
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
            )
        }),
        ("tests (cargo test)", || {
            // In CI the tests that need outside parts (the shared PBS file, casync) must run,
            // not skip: these variables turn a missing part into a failure.
            cargo(
                &["test", "--workspace", "--all-features", "--locked"],
                &[
                    ("CAIRN_REQUIRE_SHARED", "1"),
                    ("CAIRN_REQUIRE_INTEROP", "1"),
                ],
            )
        }),
        ("docs (cargo doc, warnings denied)", || {
            cargo(
                &[
                    "doc",
                    "--workspace",
                    "--no-deps",
                    "--all-features",
                    "--locked",
                ],
                &[("RUSTDOCFLAGS", "-D warnings")],
            )
        }),
        ("cache model checking (shuttle, --cfg shuttle)", || {
            // shuttle replaces the cache's locks, atomics and tasks and explores interleavings
            // of the in-flight protocol; a target folder of its own keeps the main build warm.
            cargo(
                &[
                    "test",
                    "--package",
                    "cairn-cache",
                    "--test",
                    "shuttle",
                    "--locked",
                    "--target-dir",
                    "target/shuttle",
                ],
                &[("RUSTFLAGS", "--cfg shuttle")],
            )
        }),
        (
            "benches build and smoke (cargo test --benches: each benchmark run once)",
            || {
                // In the test profile the tests just built, with the same features: only the
                // bench programs compile, and each runs once (criterion's test mode; the cli's
                // restore benches on a 16 MiB image). A bench-profile build compiled the whole
                // workspace, the S3 server of the tests included, a second time in release
                // (four minutes) to prove no more than that they build.
                cargo(
                    &[
                        "test",
                        "--workspace",
                        "--all-features",
                        "--benches",
                        "--locked",
                    ],
                    &[],
                )
            },
        ),
        ("layering check", layering_step),
        ("fuzz build and smoke (every target, 10 s each)", || {
            if !fuzz::present() {
                return Err("fuzz/Cargo.toml is missing".to_owned());
            }
            fuzz::smoke()
        }),
        (
            "bench smoke (cargo xtask bench --size 64MiB --runs 1 --profile dev)",
            || {
                // The harness end to end on a small image, in the dev profile the tests built
                // (a release build of the cli would add minutes): every row runs, the report has
                // every key. The figures of a debug build mean nothing.
                let args = ["--size", "64MiB", "--runs", "1", "--profile", "dev"].map(String::from);
                bench::run(&bench::BenchOptions::parse(&args)?)
            },
        ),
    ];
    for (index, (name, step)) in steps.iter().enumerate() {
        eprintln!("\n==> [{}/{}] {name}", index + 1, steps.len());
        let step_started = Instant::now();
        step().map_err(|e| format!("step `{name}`: {e}"))?;
        eprintln!(
            "==> [{}/{}] {name}: ok ({:.1} s)",
            index + 1,
            steps.len(),
            step_started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "\nxtask ci: all {} steps passed in {:.1} s",
        steps.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn layering_step() -> StepResult {
    let output = Command::new(cargo_bin())
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let violations = layering::check(&metadata)?;
    if violations.is_empty() {
        eprintln!("layering: every cairn crate depends only on the layers below it");
        Ok(())
    } else {
        for violation in &violations {
            eprintln!("layering: {violation}");
        }
        Err(format!(
            "{} forbidden dependency edge(s); see ARCHITECTURE.md for the layers",
            violations.len()
        ))
    }
}

/// Runs `cargo ARGS` in the workspace root, streaming its output.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> StepResult {
    let mut command = Command::new(cargo_bin());
    command.args(args).current_dir(workspace_root());
    for (key, value) in env {
        command.env(key, value);
    }
    let status = command
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` exited with {status}", args.join(" ")))
    }
}

pub(crate) fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
