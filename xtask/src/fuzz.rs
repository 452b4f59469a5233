//! `cargo xtask fuzz`: run the fuzz targets of `fuzz/` with cargo-fuzz (installed on demand) on
//! stable Rust, and summarise executions, coverage and crashes per target.

use std::path::Path;
use std::process::Command;

use crate::{StepResult, cargo_bin, workspace_root};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FuzzOptions {
    pub(crate) target: Option<String>,
    pub(crate) seconds: u64,
    pub(crate) jobs: u64,
    pub(crate) asan: bool,
}

impl FuzzOptions {
    /// Parses `[TARGET] [--seconds N] [--jobs N] [--asan]`.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            target: None,
            seconds: 60,
            jobs: 1,
            asan: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v > 0)
                    .ok_or_else(|| format!("{name} takes a positive whole number"))
            };
            match arg.as_str() {
                "--seconds" => options.seconds = number("--seconds")?,
                "--jobs" => options.jobs = number("--jobs")?,
                "--asan" => options.asan = true,
                flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                target if options.target.is_none() => options.target = Some(target.to_owned()),
                extra => return Err(format!("unexpected argument {extra}")),
            }
        }
        Ok(options)
    }
}

/// Installs cargo-fuzz with `cargo install --locked` unless `cargo fuzz` already runs.
pub(crate) fn ensure_cargo_fuzz() -> StepResult {
    let present = Command::new(cargo_bin())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)");
    let status = Command::new(cargo_bin())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .map_err(|e| format!("could not run cargo install: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("cargo install cargo-fuzz --locked failed".to_owned())
    }
}

fn fuzz_command(asan: bool) -> Command {
    let mut command = Command::new(cargo_bin());
    command.arg("fuzz").current_dir(workspace_root());
    if asan {
        // AddressSanitizer needs -Z flags; stable rustc accepts them with this.
        command.env("RUSTC_BOOTSTRAP", "1");
    }
    command
}

fn sanitizer(asan: bool) -> &'static str {
    if asan { "address" } else { "none" }
}

/// The targets `cargo fuzz list` reports.
pub(crate) fn targets() -> Result<Vec<String>, String> {
    let output = fuzz_command(false)
        .arg("list")
        .output()
        .map_err(|e| format!("could not run cargo fuzz list: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Builds every target.
pub(crate) fn build(asan: bool) -> StepResult {
    let status = fuzz_command(asan)
        .args(["build", "--sanitizer", sanitizer(asan)])
        .status()
        .map_err(|e| format!("could not run cargo fuzz build: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo fuzz build exited with {status}"))
    }
}

/// What one run of one target did.
#[derive(Debug, Default)]
struct Outcome {
    executions: Option<u64>,
    coverage: Option<u64>,
    crash: Option<String>,
}

/// Reads libFuzzer's output: the final stats, the last coverage figure, a crash artifact.
fn summarise(output: &str) -> Outcome {
    let mut outcome = Outcome::default();
    for line in output.lines() {
        if let Some(rest) = line.trim().strip_prefix("stat::number_of_executed_units:") {
            outcome.executions = rest.trim().parse().ok();
        }
        if let Some(at) = line.find(" cov: ") {
            let value = line[at + 6..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok());
            outcome.coverage = value.or(outcome.coverage);
        }
        if let Some(at) = line.find("Test unit written to ") {
            outcome.crash = Some(line[at + 21..].trim().to_owned());
        }
    }
    outcome
}

/// Runs one target for `options.seconds`, with the committed seeds and a local corpus.
fn run_target(target: &str, options: &FuzzOptions) -> Result<Outcome, String> {
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds").join(target);
    let mut command = fuzz_command(options.asan);
    command
        .args(["run", target, "--sanitizer", sanitizer(options.asan)])
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    command.args([
        "--",
        &format!("-max_total_time={}", options.seconds),
        "-max_len=16384",
        "-timeout=20",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
    ]);
    if options.jobs > 1 {
        command.arg(format!("-fork={}", options.jobs));
    }
    let output = command
        .output()
        .map_err(|e| format!("could not run cargo fuzz run {target}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut outcome = summarise(&text);
    if !output.status.success() && outcome.crash.is_none() {
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        outcome.crash = Some(format!(
            "(no artifact reported; cargo fuzz exited with {}), last output:\n{}",
            output.status,
            tail.join("\n")
        ));
    }
    Ok(outcome)
}

/// Runs the chosen targets in turn and fails if any crashed.
pub(crate) fn run(options: &FuzzOptions) -> StepResult {
    ensure_cargo_fuzz()?;
    let all = targets()?;
    let chosen = match &options.target {
        Some(target) if all.contains(target) => vec![target.clone()],
        Some(target) => {
            return Err(format!(
                "no fuzz target `{target}`; targets: {}",
                all.join(", ")
            ));
        }
        None => all,
    };
    build(options.asan)?;
    let mut crashed = Vec::new();
    for target in &chosen {
        eprintln!(
            "fuzz: {target} for {} s ({} job(s))",
            options.seconds, options.jobs
        );
        let outcome = run_target(target, options)?;
        let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        eprintln!(
            "fuzz: {target}: {} executions, coverage {}, {}",
            show(outcome.executions),
            show(outcome.coverage),
            match &outcome.crash {
                None => "no crash".to_owned(),
                Some(input) => format!("CRASH: {input}"),
            }
        );
        if outcome.crash.is_some() {
            crashed.push(target.clone());
        }
    }
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} target(s) crashed: {}; reproduce with `cargo fuzz run TARGET INPUT`, fix, and commit the \
             minimised input under the owning crate's test_data/fuzz-regressions/TARGET/",
            crashed.len(),
            crashed.join(", ")
        ))
    }
}

/// The CI step: build every target, then run each briefly.
pub(crate) fn smoke() -> StepResult {
    run(&FuzzOptions {
        target: None,
        seconds: 10,
        jobs: 1,
        asan: false,
    })
}

/// Whether the fuzz workspace exists (a checkout without it skips nothing silently: it fails).
pub(crate) fn present() -> bool {
    Path::new(&workspace_root())
        .join("fuzz/Cargo.toml")
        .is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options() {
        let o = FuzzOptions::parse(&args(&[
            "cache_ops",
            "--seconds",
            "30",
            "--jobs",
            "2",
            "--asan",
        ]))
        .unwrap();
        assert_eq!(
            o,
            FuzzOptions {
                target: Some("cache_ops".into()),
                seconds: 30,
                jobs: 2,
                asan: true
            }
        );
        assert_eq!(FuzzOptions::parse(&[]).unwrap().seconds, 60);
        let positive = Err("--seconds takes a positive whole number".to_owned());
        assert_eq!(FuzzOptions::parse(&args(&["--seconds"])), positive);
        assert_eq!(FuzzOptions::parse(&args(&["--seconds", "0"])), positive);
        assert_eq!(
            FuzzOptions::parse(&args(&["a", "b"])),
            Err("unexpected argument b".to_owned())
        );
        assert_eq!(
            FuzzOptions::parse(&args(&["--bogus"])),
            Err("unknown option --bogus".to_owned())
        );
    }

    #[test]
    fn libfuzzer_output() {
        let text = "#2\tINITED cov: 120 ft: 130 corp: 3/40b\n#5000\tNEW    cov: 321 ft: 400\nDone 5000 runs in 2 second(s)\nstat::number_of_executed_units: 5012\n";
        let o = summarise(text);
        assert_eq!(
            (o.executions, o.coverage, o.crash),
            (Some(5012), Some(321), None)
        );
        let crash = summarise(
            "==1== ERROR: libFuzzer: deadly signal\nartifact_prefix='x/'; Test unit written to fuzz/artifacts/t/crash-abc\n",
        );
        assert_eq!(crash.crash.as_deref(), Some("fuzz/artifacts/t/crash-abc"));
    }
}
