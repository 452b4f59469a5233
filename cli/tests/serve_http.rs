//! `cairn serve-http`: the real `casync extract --store=http://…` restores from it, cairn's own
//! HTTP store reads it in both layouts, and plain HTTP requests get what HTTP promises (HEAD,
//! ranges, 404, 405).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Command, Stdio};

use common::*;

/// A running `cairn serve-http`, stopped when dropped.
struct Served {
    child: Child,
    /// `127.0.0.1:PORT`.
    address: String,
}

impl Served {
    fn start(stores: &[&str]) -> Self {
        let mut args = vec!["serve-http"];
        for store in stores {
            args.extend(["--store", store]);
        }
        args.extend(["--listen", "127.0.0.1:0"]);
        let mut child = cairn_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut banner = String::new();
        lines.read_line(&mut banner).unwrap();
        assert!(banner.contains("serving"), "no banner: {banner:?}");
        let address = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        std::thread::spawn(move || for _ in lines.lines() {});
        Self { child, address }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// One raw HTTP/1.1 request; the status, the head and the body.
    fn request(&self, method: &str, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        let mut text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for header in headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        stream.write_all(text.as_bytes()).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        let end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&reply[..end]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head, reply[end + 4..].to_vec())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[test]
fn casync_extract_reads_a_casync_store_served_by_cairn() {
    let Some(casync) = tool("casync") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(6);
    let input = dir.path().join("disk.img");
    std::fs::write(&input, &data).unwrap();
    let store = dir.path().join("default.castr");
    let index = dir.path().join("disk.caibx");
    casync_make(&casync, &store, &index, &input);
    let served = Served::start(&[&format!("castr:{}", s(&store))]);
    let extracted = dir.path().join("extracted.img");
    let out = Command::new(&casync)
        .arg("extract")
        .arg(format!("--store={}", served.url()))
        .arg(&index)
        .arg(&extracted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&extracted).unwrap() == data,
        "casync extract differs"
    );
    // And cairn reads the same server as an HTTP store.
    let restored = dir.path().join("restored.img");
    ok(&cairn(&[
        "restore",
        "-q",
        "--store",
        &served.url(),
        s(&index),
        s(&restored),
    ]));
    assert!(std::fs::read(&restored).unwrap() == data);
}

#[test]
fn a_pbs_datastore_is_served_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed_image(6);
    let (store, index) = backed_up(dir.path(), "disk", &data);
    let served = Served::start(&[s(&store)]);
    for layout in ["pbs", "castr"] {
        let restored = dir.path().join(format!("{layout}.img"));
        ok(&cairn(&[
            "restore",
            "-q",
            "--store",
            &served.url(),
            "--layout",
            layout,
            s(&index),
            s(&restored),
        ]));
        assert!(
            std::fs::read(&restored).unwrap() == data,
            "{layout} differs"
        );
    }
    // The layout found from the first chunk.
    ok(&cairn(&[
        "verify",
        "-q",
        "--store",
        &served.url(),
        s(&index),
    ]));
}

#[test]
fn plain_http_gets_heads_ranges_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20);
    let (store, _) = backed_up(dir.path(), "disk", &data);
    let served = Served::start(&[s(&store)]);
    let mut chunks = walk(&store.join(".chunks"));
    chunks.sort();
    let file = &chunks[0];
    let blob = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    let path = format!("/.chunks/{}/{name}", &name[..4]);

    let (status, head, body) = served.request("GET", &path, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(body == blob);
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));

    let (status, head, body) = served.request("HEAD", &path, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty());
    assert_eq!(
        header(&head, "content-length"),
        Some(blob.len().to_string().as_str())
    );

    let (status, head, body) = served.request("GET", &path, &["Range: bytes=10-99"]);
    assert_eq!(status, 206, "{head}");
    assert!(body == blob[10..100]);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes 10-99/{}", blob.len()).as_str())
    );
    let (status, _, body) = served.request("GET", &path, &["Range: bytes=-16"]);
    assert_eq!(status, 206);
    assert!(body == blob[blob.len() - 16..]);
    let (status, head, _) =
        served.request("GET", &path, &[&format!("Range: bytes={}-", blob.len())]);
    assert_eq!(status, 416, "{head}");

    // The casync layout of the same chunk: a zstd frame, which casync can read.
    let (status, _, body) = served.request("GET", &format!("/{}/{name}.cacnk", &name[..4]), &[]);
    assert_eq!(status, 200);
    assert_eq!(&body[..4], b"\x28\xb5\x2f\xfd");

    for method in ["PUT", "POST", "DELETE", "PATCH"] {
        let (status, head, _) = served.request(method, &path, &["Content-Length: 0"]);
        assert_eq!(status, 405, "{method}: {head}");
        assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
    }
    let absent = format!("/.chunks/0000/{}", "0".repeat(64));
    for path in [
        "/",
        "/etc/passwd",
        "/.chunks/../../x",
        "/.chunks/abcd/abc",
        &absent,
    ] {
        let (status, head, _) = served.request("GET", path, &[]);
        assert_eq!(status, 404, "{path}: {head}");
    }
    // A client that sends garbage is answered or dropped; the server keeps serving.
    let mut stream = std::net::TcpStream::connect(&served.address).unwrap();
    stream.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    assert_eq!(served.request("GET", &path, &[]).0, 200);
}
