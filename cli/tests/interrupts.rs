//! SIGINT and SIGTERM, sent for real to a running `cairn`: it stops, removes this run's
//! temporary files, says so in one line and exits 130 or 143; nothing partial is left under a
//! final name.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rustix::process::{Pid, Signal, kill_process};

fn send(child: &Child, signal: Signal) {
    let pid = Pid::from_child(child);
    kill_process(pid, signal).unwrap();
}

/// Waits for `child` to exit (at most 30 s) and returns its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cairn did not exit within 30 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// Polls (every millisecond, for at most 30 s) until `ready` holds while `child` still runs.
fn when(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "cairn finished before {what}, so it could not be interrupted"
        );
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Stops `child` mid-run, sends `signal`, lets it go on: the signal lands while work is in
/// flight, however fast the machine.
fn interrupt_frozen(child: &Child, signal: Signal) {
    send(child, Signal::STOP);
    send(child, signal);
    send(child, Signal::CONT);
}

fn assert_one_line(stderr: &str, words: &str) {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(words), "expected `{words}` in: {stderr}");
}

/// Every chunk file of the PBS datastore `store` is whole: it decodes to data of its digest.
fn every_chunk_is_whole(store: &Path) -> usize {
    let files = walk(&store.join(".chunks"));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let plaintext = cairn_chunk_store::decode_blob(&bytes, 4 << 20)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let digest = cairn_chunk_store::DigestAlgorithm::Sha256.digest(&plaintext);
        assert_eq!(
            cairn_chunk_store::to_hex(&digest),
            file.file_name().unwrap().to_str().unwrap()
        );
    }
    files.len()
}

#[test]
fn backup_stops_on_sigint_and_sigterm_leaving_no_index_and_no_temporary() {
    for (signal, code, name) in [(Signal::INT, 130, "SIGINT"), (Signal::TERM, 143, "SIGTERM")] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        mkfifo(&input);
        // The input: 12 MiB, then a pause that lasts until the test is done, so the backup is
        // surely still running when the signal comes.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let feeder = {
            let input = input.clone();
            std::thread::spawn(move || {
                let mut fifo = std::fs::OpenOptions::new().write(true).open(input).unwrap();
                let _ = fifo.write_all(&random_bytes(12 << 20));
                let _ = held.recv();
            })
        };
        let store = dir.path().join("ds");
        let index = dir.path().join("image.fidx");
        let mut child = cairn_command(&[
            "backup",
            "--store",
            s(&store),
            "--chunk-size",
            "1M",
            s(&input),
            s(&index),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        when(&mut child, "the first chunks were stored", || {
            store.join(".chunks").is_dir() && walk(&store.join(".chunks")).len() >= 4
        });
        send(&child, signal);
        let (exit, stderr) = finish(child);
        release.send(()).unwrap();
        feeder.join().unwrap();
        assert_eq!(exit, Some(code), "{stderr}");
        assert_one_line(
            &stderr,
            &format!("interrupted by {name}: no index was written"),
        );
        assert!(!index.exists(), "an index appeared");
        assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
        assert!(every_chunk_is_whole(&store) >= 4);
    }
}

/// A restore of a 128 MiB image to `output` in `dir`, given `signal` once its temporary has
/// appeared: its exit code and stderr.
fn interrupted_restore(dir: &Path, output: &Path, signal: Signal) -> (Option<i32>, String) {
    let data = random_bytes(128 << 20);
    let (store, index) = backed_up(dir, "image", &data);
    drop(data);
    let mut child = cairn_command(&["restore", "--store", s(&store), s(&index), s(output)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    when(&mut child, "the temporary image appeared", || {
        names(dir).iter().any(|n| n.ends_with(".tmp"))
    });
    interrupt_frozen(&child, signal);
    finish(child)
}

#[test]
fn restore_into_an_existing_file_stops_on_sigint_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("existing.img");
    std::fs::write(&output, b"the old contents").unwrap();
    let (exit, stderr) = interrupted_restore(dir.path(), &output, Signal::INT);
    assert_eq!(exit, Some(130), "{stderr}");
    assert_one_line(
        &stderr,
        "interrupted by SIGINT: the unfinished image was removed",
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"the old contents");
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn verify_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(128 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    drop(data);
    let mut child = cairn_command(&["verify", "--store", s(&store), s(&index)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let io = PathBuf::from(format!("/proc/{}/io", child.id()));
    when(&mut child, "verify read 8 MiB of chunks", || {
        std::fs::read_to_string(&io).is_ok_and(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 8 << 20)
        })
    });
    interrupt_frozen(&child, Signal::TERM);
    let (exit, stderr) = finish(child);
    assert_eq!(exit, Some(143), "{stderr}");
    assert_one_line(&stderr, "interrupted by SIGTERM: ");
    assert!(stderr.contains("before it checked every chunk"), "{stderr}");
}

#[test]
fn cat_and_restore_into_a_stalled_reader_stop_on_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(8 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    // cat into a pipe nobody reads: it fills the pipe and waits.
    let child = cairn_command(&["cat", "--store", s(&store), s(&index)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send(&child, Signal::INT);
    let (exit, stderr) = finish(child);
    assert_eq!(exit, Some(130), "{stderr}");
    assert_one_line(
        &stderr,
        "interrupted by SIGINT: standard output got part of the image",
    );

    // restore into a FIFO whose reader has stopped reading.
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut pipe = std::fs::File::open(fifo).unwrap();
            let mut first = vec![0u8; 4096];
            pipe.read_exact(&mut first).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            first
        })
    };
    let child = cairn_command(&["restore", "--store", s(&store), s(&index), s(&fifo)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send(&child, Signal::TERM);
    let (exit, stderr) = finish(child);
    assert_eq!(exit, Some(143), "{stderr}");
    assert_one_line(&stderr, "got part of the image");
    assert!(reader.join().unwrap() == data[..4096]);
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

/// `child`, blocked for half a second, gets `signal` and must exit with `code` at once (within
/// 3 s), saying `words` in one line.
fn stops_while_blocked(child: Child, signal: Signal, code: i32, words: &str) {
    let mut child = child;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "cairn finished before the signal: {:?}",
        finish(child)
    );
    send(&child, signal);
    let started = Instant::now();
    let (exit, stderr) = finish(child);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?} to stop: {stderr}",
        started.elapsed()
    );
    assert_eq!(exit, Some(code), "{stderr}");
    assert_one_line(&stderr, words);
}

#[test]
fn signals_are_heard_while_cairn_waits_on_a_fifo_or_a_stalled_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let output = dir.path().join("out.img");
    let spawn = |args: &[&str]| {
        cairn_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A FIFO as backup INPUT, no writer yet.
    let new_index = dir.path().join("new.fidx");
    let child = spawn(&[
        "backup",
        "-q",
        "--store",
        s(&store),
        s(&fifo),
        s(&new_index),
    ]);
    stops_while_blocked(
        child,
        Signal::TERM,
        143,
        "interrupted by SIGTERM: nothing was written",
    );
    assert!(!new_index.exists());
    // A FIFO as INDEX, for restore, verify and info.
    let child = spawn(&["restore", "-q", "--store", s(&store), s(&fifo), s(&output)]);
    stops_while_blocked(
        child,
        Signal::INT,
        130,
        "interrupted by SIGINT: nothing was written",
    );
    let child = spawn(&["verify", "--store", s(&store), s(&fifo)]);
    stops_while_blocked(
        child,
        Signal::HUP,
        129,
        "interrupted by SIGHUP: nothing was written",
    );
    let child = spawn(&["info", s(&fifo)]);
    stops_while_blocked(
        child,
        Signal::INT,
        130,
        "interrupted by SIGINT: nothing was shown",
    );
    // `… | cairn restore --store ds /dev/stdin out` with a producer that stalled: half an
    // index, then nothing.
    for command in ["restore", "info"] {
        let mut args = vec![command];
        if command == "restore" {
            args.extend(["--store", s(&store), "/dev/stdin", s(&output)]);
        } else {
            args.push("/dev/stdin");
        }
        let mut child = cairn_command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut producer = child.stdin.take().unwrap();
        producer
            .write_all(&std::fs::read(&index).unwrap()[..2000])
            .unwrap();
        stops_while_blocked(child, Signal::TERM, 143, "interrupted by SIGTERM");
        drop(producer);
    }
    assert!(!output.exists());
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn read_stops_on_the_first_signal() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(32 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    // 32 MiB into a pipe nobody reads: it fills the pipe and waits.
    let child = cairn_command(&[
        "read",
        "--store",
        s(&store),
        s(&index),
        "--offset",
        "0",
        "--length",
        "32M",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    stops_while_blocked(
        child,
        Signal::TERM,
        143,
        "interrupted by SIGTERM: standard output got",
    );
}

#[test]
fn sighup_stops_a_restore_like_sigterm_leaving_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("restored.img");
    let (exit, stderr) = interrupted_restore(dir.path(), &output, Signal::HUP);
    assert_eq!(exit, Some(129), "{stderr}");
    assert_one_line(
        &stderr,
        "interrupted by SIGHUP: the unfinished image was removed",
    );
    assert!(!output.exists());
    assert_eq!(temporaries(dir.path()), Vec::<PathBuf>::new());
}

/// Runs `cairn ARGS` on a new terminal (a pty, through Python's `pty`), waits for its
/// passphrase prompt, types Ctrl-C, and reports as JSON-ish lines: whether echo was off at the
/// prompt, the exit status (or none after 5 s), and whether echo is on again.
const AT_THE_PROMPT: &str = r#"
import json, os, pty, select, sys, termios, time
binary, args = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.environ.pop("PBS_ENCRYPTION_PASSWORD", None)
    os.execv(binary, [binary] + args)
out, deadline = b"", time.time() + 20
while b"Passphrase" not in out and time.time() < deadline:
    if select.select([fd], [], [], 0.1)[0]:
        out += os.read(fd, 1024)
echo_at_prompt = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
os.write(fd, b"\x03")
status, started = None, time.time()
while time.time() - started < 5:
    done, raw = os.waitpid(pid, os.WNOHANG)
    if done:
        status = os.waitstatus_to_exitcode(raw)
        break
    if select.select([fd], [], [], 0.05)[0]:
        try:
            out += os.read(fd, 1024)
        except OSError:
            pass
echo_after = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
if status is None:
    os.kill(pid, 9)
print(json.dumps({"prompted": b"Passphrase" in out, "echo_at_prompt": echo_at_prompt,
                  "status": status, "echo_after": echo_after, "said": out.decode(errors="replace")}))
"#;

#[test]
fn ctrl_c_at_the_passphrase_prompt_exits_130_with_the_terminal_as_it_was() {
    let Some(python) = tool("python3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20);
    let (store, index) = backed_up(dir.path(), "image", &data);
    let existing = dir.path().join("protected.key");
    ok(
        &cairn_command(&["key", "create", "--kdf", "pbkdf2", s(&existing)])
            .env("PBS_ENCRYPTION_PASSWORD", "correct horse")
            .output()
            .unwrap(),
    );
    let new_key = dir.path().join("new.key");
    let output = dir.path().join("out.img");
    for args in [
        vec!["key", "create", "--kdf", "scrypt", s(&new_key)],
        vec![
            "restore",
            "--store",
            s(&store),
            "--keyfile",
            s(&existing),
            s(&index),
            s(&output),
        ],
    ] {
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(AT_THE_PROMPT)
            .arg(binary())
            .args(&args)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            report
                .split(&format!("\"{name}\": "))
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(field("prompted"), "true", "{args:?}: {report}");
        assert_eq!(field("echo_at_prompt"), "false", "{args:?}: {report}");
        assert_eq!(
            field("status"),
            "130",
            "{args:?}: Ctrl-C was not heard: {report}"
        );
        assert_eq!(
            field("echo_after"),
            "true",
            "{args:?}: echo left off: {report}"
        );
        assert!(
            report.contains("interrupted by SIGINT"),
            "{args:?}: {report}"
        );
    }
    assert!(!new_key.exists());
    assert!(!output.exists());
}
