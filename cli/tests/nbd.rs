//! `cairn serve-nbd` against real clients: qemu-img, qemu-io, nbdinfo and nbdcopy read backup
//! images through it byte for byte, see zero chunks as holes, cannot write, and hostile clients
//! or a missing chunk cost only their own request or connection.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rustix::process::{Pid, Signal, kill_process};

/// A running `cairn serve-nbd`, killed on drop; its stderr collected.
struct Served {
    child: Child,
    /// `127.0.0.1:PORT`.
    address: String,
    log: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `cairn serve-nbd --store STORE ARGS... --listen 127.0.0.1:0` and waits for its
    /// banner.
    fn start(store: &Path, args: &[&str]) -> Self {
        Self::start_with(store, args, &["--listen", "127.0.0.1:0"])
    }

    fn start_with(store: &Path, args: &[&str], listen: &[&str]) -> Self {
        let mut all = vec!["serve-nbd", "--store", s(store)];
        all.extend_from_slice(args);
        all.extend_from_slice(listen);
        let mut child = cairn_command(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut banner = String::new();
        lines.read_line(&mut banner).unwrap();
        assert!(banner.contains("serving"), "no banner: {banner:?}");
        let address = banner
            .split("nbd://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let log = Arc::new(Mutex::new(banner));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut rest = String::new();
            for line in lines.lines().map_while(Result::ok) {
                rest.push_str(&line);
                rest.push('\n');
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Self {
            child,
            address,
            log,
        }
    }

    fn uri(&self, name: &str) -> String {
        format!("nbd://{}/{name}", self.address)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGINT and waits (at most 20 s) for the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        kill_process(Pid::from_child(&self.child), Signal::INT).unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

fn succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The real clients, or `None` (a skip, or a failure under `CAIRN_REQUIRE_INTEROP`).
struct Tools {
    qemu_img: PathBuf,
    qemu_io: PathBuf,
    nbdinfo: PathBuf,
    nbdcopy: PathBuf,
}

fn tools() -> Option<Tools> {
    Some(Tools {
        qemu_img: tool("qemu-img")?,
        qemu_io: tool("qemu-io")?,
        nbdinfo: tool("nbdinfo")?,
        nbdcopy: tool("nbdcopy")?,
    })
}

/// 8 MiB of noise with 1 MiB chunks: chunks 4, 5 and 6 are zeros (the mixed image's zero run).
fn image_with_holes(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let mut data = mixed_image(8);
    // Whole 4 KiB blocks: qemu rounds an export's size up to its sector size. The last chunk
    // stays short (8 KiB).
    data.truncate(data.len() / 4096 * 4096);
    assert!(data[4 << 20..7 << 20].iter().all(|&b| b == 0));
    let (store, index) = backed_up(dir, name, &data);
    (store, index, data)
}

#[test]
fn qemu_img_nbdcopy_and_nbdinfo_read_the_image_exactly() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, disk, data) = image_with_holes(dir.path(), "drive-scsi0.img");
    let other = dir.path().join("other.img");
    std::fs::write(&other, &data[..3 << 20]).unwrap();
    let other_index = dir.path().join("other.img.fidx");
    backup(&store, &other, &other_index);
    let served = Served::start(&store, &[s(&disk), s(&other_index)]);
    let uri = served.uri("drive-scsi0.img");

    let info = run(&t.qemu_img, &["info", "-f", "raw", &uri]);
    succeeded(&info, "qemu-img info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains(&format!("({} bytes)", data.len())), "{text}");

    let converted = dir.path().join("converted.raw");
    succeeded(
        &run(
            &t.qemu_img,
            &["convert", "-f", "raw", "-O", "raw", &uri, s(&converted)],
        ),
        "qemu-img convert",
    );
    assert!(
        std::fs::read(&converted).unwrap() == data,
        "qemu-img convert differs"
    );
    succeeded(
        &run(
            &t.qemu_img,
            &["compare", "-f", "raw", "-F", "raw", &uri, s(&converted)],
        ),
        "qemu-img compare",
    );

    let copied = dir.path().join("copied.raw");
    succeeded(&run(&t.nbdcopy, &[&uri, s(&copied)]), "nbdcopy");
    assert!(std::fs::read(&copied).unwrap() == data, "nbdcopy differs");

    let map = run(&t.nbdinfo, &["--map", &uri]);
    succeeded(&map, "nbdinfo --map");
    let map = String::from_utf8_lossy(&map.stdout);
    let extents: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        extents.contains(&vec!["4194304", "3145728", "3", "hole,zero"]),
        "the zero chunks are one hole,zero extent:\n{map}"
    );
    assert!(
        extents
            .iter()
            .filter(|e| e.get(3) == Some(&"hole,zero"))
            .count()
            == 1,
        "only the zero chunks are holes:\n{map}"
    );

    let list = run(
        &t.nbdinfo,
        &["--list", &format!("nbd://{}", served.address)],
    );
    succeeded(&list, "nbdinfo --list");
    let list = String::from_utf8_lossy(&list.stdout);
    for name in ["drive-scsi0.img", "other.img"] {
        assert!(
            list.contains(&format!("export=\"{name}\"")),
            "{name} not listed:\n{list}"
        );
    }
    assert!(
        list.contains("base:allocation") && list.contains("is_read_only: true"),
        "{list}"
    );

    // Two clients at once, each on its own export.
    let first = dir.path().join("first.raw");
    let second = dir.path().join("second.raw");
    let one = Command::new(&t.nbdcopy)
        .args([&uri, s(&first)])
        .spawn()
        .unwrap();
    let two = Command::new(&t.qemu_img)
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &served.uri("other.img"),
            s(&second),
        ])
        .spawn()
        .unwrap();
    for mut child in [one, two] {
        assert!(child.wait().unwrap().success());
    }
    assert!(std::fs::read(&first).unwrap() == data);
    assert!(std::fs::read(&second).unwrap() == data[..3 << 20]);
}

#[test]
fn qemu_io_cannot_write_and_the_image_is_unchanged() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, index, data) = image_with_holes(dir.path(), "disk");
    let served = Served::start(&store, &[s(&index)]);
    let uri = served.uri("disk");
    for args in [
        vec!["-f", "raw", "-c", "write 0 512", uri.as_str()],
        vec!["-f", "raw", "-r", "-c", "write -P 0xaa 0 512", uri.as_str()],
    ] {
        let out = run(&t.qemu_io, &args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success() || said.contains("denied") || said.contains("read-only"),
            "qemu-io wrote: {said}"
        );
        assert!(!said.contains("wrote 512/512"), "qemu-io wrote: {said}");
    }
    let read = run(
        &t.qemu_io,
        &["-f", "raw", "-r", "-c", "read -P 0 4M 3M", &uri],
    );
    succeeded(&read, "qemu-io read of the zero chunks");
    let copied = dir.path().join("after.raw");
    succeeded(&run(&t.nbdcopy, &[&uri, s(&copied)]), "nbdcopy");
    assert!(std::fs::read(&copied).unwrap() == data, "the image changed");
}

/// Connects and reads the greeting.
fn greeted(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut greeting = [0u8; 18];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    stream
}

/// Reads until the server closes; panics if it does not within the read timeout.
fn closed_by_server(mut stream: TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the server closed the connection");
    rest
}

/// A handshake into transmission on `name` with simple replies.
fn transmitting(address: &str, name: &str) -> TcpStream {
    let mut stream = greeted(address);
    stream.write_all(&3u32.to_be_bytes()).unwrap();
    let mut go = b"IHAVEOPT".to_vec();
    go.extend(7u32.to_be_bytes());
    go.extend((u32::try_from(name.len()).unwrap() + 6).to_be_bytes());
    go.extend(u32::try_from(name.len()).unwrap().to_be_bytes());
    go.extend(name.as_bytes());
    go.extend(0u16.to_be_bytes());
    stream.write_all(&go).unwrap();
    loop {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).unwrap();
        let reply = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let length = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let mut data = vec![0u8; length as usize];
        stream.read_exact(&mut data).unwrap();
        match reply {
            1 => return stream,
            3 => {}
            other => panic!("GO refused: {other:#x}"),
        }
    }
}

fn request(command: u16, offset: u64, length: u32) -> Vec<u8> {
    let mut out = 0x2560_9513u32.to_be_bytes().to_vec();
    out.extend(0u16.to_be_bytes());
    out.extend(command.to_be_bytes());
    out.extend(42u64.to_be_bytes());
    out.extend(offset.to_be_bytes());
    out.extend(length.to_be_bytes());
    out
}

/// The error of a simple reply.
fn simple_error(stream: &mut TcpStream) -> u32 {
    let mut reply = [0u8; 16];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..4], 0x6744_6698u32.to_be_bytes());
    u32::from_be_bytes(reply[4..8].try_into().unwrap())
}

#[test]
fn hostile_clients_do_not_stop_the_server() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, index, data) = image_with_holes(dir.path(), "disk");
    let mut served = Served::start(&store, &[s(&index)]);
    let address = served.address.clone();

    // Random bytes instead of a handshake.
    let mut noise = greeted(&address);
    noise.write_all(&random_bytes(4096)).unwrap();
    closed_by_server(noise);
    // A truncated handshake: half the client flags, then silence until the server gives up.
    let mut truncated = greeted(&address);
    truncated.write_all(&[0, 0]).unwrap();
    truncated.shutdown(std::net::Shutdown::Write).unwrap();
    closed_by_server(truncated);
    // A 4 GiB read is refused with EINVAL; a 4 GiB write closes the connection.
    let mut big = transmitting(&address, "disk");
    big.write_all(&request(0, 0, u32::MAX)).unwrap();
    assert_eq!(simple_error(&mut big), 22);
    big.write_all(&request(0, data.len() as u64, 512)).unwrap();
    assert_eq!(simple_error(&mut big), 22, "past the end");
    big.write_all(&request(1, 0, u32::MAX)).unwrap();
    closed_by_server(big);
    // Hundreds of connections opened and dropped, some mid-handshake.
    for i in 0..300 {
        let mut stream = TcpStream::connect(&address).unwrap();
        if i % 3 == 0 {
            let _ = stream.write_all(b"IHAVEOPT");
        }
    }
    // Random bytes in transmission.
    let mut garbage = transmitting(&address, "disk");
    garbage.write_all(&random_bytes(1000)).unwrap();
    closed_by_server(garbage);

    assert!(served.alive());
    let copied = dir.path().join("copied.raw");
    succeeded(
        &run(&t.nbdcopy, &[&served.uri("disk"), s(&copied)]),
        "nbdcopy",
    );
    assert!(std::fs::read(&copied).unwrap() == data);
}

#[test]
fn a_missing_chunk_is_eio_with_a_log_line_and_the_server_goes_on() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, index, data) = image_with_holes(dir.path(), "disk");
    // Remove the chunk of image bytes 1..2 MiB.
    let digest: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&data[1 << 20..2 << 20])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let chunk = store.join(".chunks").join(&digest[..4]).join(&digest);
    std::fs::remove_file(&chunk).unwrap();
    let mut served = Served::start(&store, &[s(&index)]);
    let uri = served.uri("disk");
    let out = run(&t.qemu_io, &["-f", "raw", "-r", "-c", "read 1M 4096", &uri]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Input/output error"), "{said}");
    let read = run(
        &t.qemu_io,
        &["-f", "raw", "-r", "-c", "read -P 0 4M 1M", &uri],
    );
    succeeded(&read, "a read elsewhere");
    std::thread::sleep(Duration::from_millis(200));
    let log = served.log();
    let line = log
        .lines()
        .find(|l| l.contains(&digest))
        .unwrap_or_else(|| panic!("no log line names the chunk:\n{log}"));
    assert!(
        line.contains("\"disk\"") && line.contains("offset 1048576"),
        "{line}"
    );
    assert!(served.alive());
}

#[test]
fn ctrl_c_lets_a_request_in_flight_finish_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (store, index, data) = image_with_holes(dir.path(), "disk");
    let mut served = Served::start(&store, &[s(&index), "--verbose"]);
    let mut stream = transmitting(&served.address, "disk");
    stream.write_all(&request(0, 0, 1 << 20)).unwrap();
    // The request reaches the server before the signal does (waiting for the reply to start
    // would race with its end). cairn-nbd's own tests hold a request in flight across a stop.
    std::thread::sleep(Duration::from_millis(200));
    let status = served.interrupt();
    assert_eq!(status.code(), Some(0), "{}", served.log());
    assert_eq!(simple_error(&mut stream), 0);
    let mut got = vec![0u8; 1 << 20];
    stream.read_exact(&mut got).unwrap();
    assert!(got == data[..1 << 20], "the read in flight was answered");
    let log = served.log();
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "{log}");
    assert!(
        log.contains("closed: export \"disk\", 1 reads, 1048576 bytes"),
        "{log}"
    );
    assert!(
        TcpStream::connect(&served.address).is_err(),
        "still listening"
    );
}

#[test]
fn verbose_logs_each_connection_with_its_cache_hits() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, index, _) = image_with_holes(dir.path(), "disk");
    let served = Served::start(&store, &[s(&index), "-v", "--cache-size", "64MiB"]);
    // The connection lines once `more` new ones came and no more follow for 300 ms (nbdcopy
    // opens several connections: the export allows multi-conn).
    let settled = |before: usize| -> Vec<String> {
        let started = Instant::now();
        let mut seen = (0, Instant::now());
        loop {
            let lines: Vec<String> = served
                .log()
                .lines()
                .filter(|l| l.contains("closed: export"))
                .map(str::to_owned)
                .collect();
            if lines.len() != seen.0 {
                seen = (lines.len(), Instant::now());
            } else if lines.len() > before && seen.1.elapsed() > Duration::from_millis(300) {
                return lines;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let number = |line: &str, before: &str| -> u64 {
        line.split(before)
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before `{before}` in {line}"))
    };
    let fetches = |line: &str| number(line, " fetched,") + number(line, " fetched ahead");
    succeeded(&run(&t.nbdcopy, &[&served.uri("disk"), "null:"]), "nbdcopy");
    let first = settled(0);
    assert!(
        first.iter().all(|l| l.contains("from the cache")),
        "{first:?}"
    );
    assert!(
        first.iter().map(|l| fetches(l)).sum::<u64>() > 0,
        "{first:?}"
    );
    succeeded(&run(&t.nbdcopy, &[&served.uri("disk"), "null:"]), "nbdcopy");
    let all = settled(first.len());
    let second = &all[first.len()..];
    assert!(
        second
            .iter()
            .map(|l| number(l, " from the cache"))
            .sum::<u64>()
            > 0,
        "{second:?}"
    );
    for line in second {
        assert_eq!(
            fetches(line),
            0,
            "the second copy came from the cache: {line}"
        );
    }
}

#[test]
fn unix_sockets_and_export_names() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, index, data) = image_with_holes(dir.path(), "disk");
    let socket = dir.path().join("nbd.sock");
    let served = Served::start_with(
        &store,
        &[s(&index), "--name", "vm-100-disk-0"],
        &["--unix", s(&socket)],
    );
    let uri = format!("nbd+unix:///vm-100-disk-0?socket={}", socket.display());
    let size = run(&t.nbdinfo, &["--size", &uri]);
    succeeded(&size, "nbdinfo --size");
    assert_eq!(
        String::from_utf8_lossy(&size.stdout).trim(),
        data.len().to_string()
    );
    drop(served);
    // A second index with --name is a usage error; so is a --unix path that is a file.
    let out = cairn(&[
        "serve-nbd",
        "--store",
        s(&store),
        s(&index),
        s(&index),
        "--name",
        "x",
    ]);
    failed_with(&out, 2, "--name");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let out = cairn(&[
        "serve-nbd",
        "--store",
        s(&store),
        s(&index),
        "--unix",
        s(&file),
    ]);
    failed_with(&out, 2, "not a socket");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn a_client_that_stops_reading_or_sends_nothing_loses_only_its_own_connection() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(64 << 20);
    let (store, index) = backed_up(dir.path(), "disk", &data);
    let mut served = Served::start(
        &store,
        &[s(&index), "--write-timeout", "2s", "--idle-timeout", "1s"],
    );
    let address = served.address.clone();
    // Eight reads of 32 MiB, the server's whole read budget, whose replies are never read.
    let mut stalled = transmitting(&address, "disk");
    for i in 0..8u64 {
        stalled
            .write_all(&request(0, (i % 2) << 25, 32 << 20))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    // A second client is not slowed: a 4 KiB read and a copy of the whole image.
    let started = Instant::now();
    let read = run(
        &t.qemu_io,
        &[
            "-f",
            "raw",
            "-r",
            "-c",
            "read -P 0 0 4096",
            &served.uri("disk"),
        ],
    );
    let said = String::from_utf8_lossy(&read.stdout).into_owned();
    assert!(said.contains("Pattern verification failed"), "{said}");
    let copied = dir.path().join("copied.raw");
    succeeded(
        &run(&t.nbdcopy, &[&served.uri("disk"), s(&copied)]),
        "nbdcopy",
    );
    assert!(std::fs::read(&copied).unwrap() == data);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second client took {:?}",
        started.elapsed()
    );
    // The write timeout closes the stalled connection before it reads its replies.
    std::thread::sleep(Duration::from_secs(3));
    let rest = closed_by_server(stalled);
    assert!(
        rest.len() < 256 << 20,
        "{} bytes: every reply was sent",
        rest.len()
    );
    // The idle timeout closes a connection that asks for nothing.
    let idle = transmitting(&address, "disk");
    let started = Instant::now();
    assert!(closed_by_server(idle).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(served.alive());
    let logged = |words: &str| {
        let started = Instant::now();
        while !served.log().contains(words) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    logged("a reply made no progress for 2 s: the client stopped reading");
    logged("idle for 1 s with no request in progress");
}
