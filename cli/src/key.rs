//! `--keyfile` and `cairn key`: PBS encryption keys, their passphrases, and key files.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_chunk_store::{CryptKey, Kdf, KeyFile};
use serde_json::json;
use zeroize::Zeroizing;

use crate::Failure;
use crate::interrupt::{Stop, unless_stopped};

/// The environment variable PBS's client reads a key's passphrase from.
const PASSPHRASE_VARIABLE: &str = "PBS_ENCRYPTION_PASSWORD";

/// Arguments of `cairn key`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// Make a new random key and write it to FILE (mode 0600; an existing file is kept).
    Create {
        /// How the key file protects the key with a passphrase (none: it does not).
        #[arg(long, value_enum, default_value = "scrypt")]
        kdf: KdfArg,
        /// The key file to write.
        file: PathBuf,
    },
    /// Show a key file: how it is protected, when it was made, the key's fingerprint.
    Show {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The key file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KdfArg {
    Scrypt,
    Pbkdf2,
    None,
}

/// A passphrase: `PBS_ENCRYPTION_PASSWORD`, else asked on the terminal (twice if `confirm`).
fn passphrase(for_what: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(value) = std::env::var_os(PASSPHRASE_VARIABLE) {
        return Ok(Zeroizing::new(value.into_encoded_bytes()));
    }
    let first = ask(&format!("Passphrase for {for_what}: "))?;
    if confirm && *ask("Again: ")? != *first {
        return Err(Failure::usage("the passphrases differ"));
    }
    Ok(first)
}

/// One line read from the terminal with echo off. The terminal is put back as it was however
/// this ends, and a signal (SIGINT from Ctrl-C, SIGTERM, SIGHUP) ends the wait: the process
/// hears it on another thread, and the wait here looks every 100 ms.
fn ask(prompt: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let no_terminal = || {
        Failure::usage(format!(
            "the key file needs a passphrase: set {PASSPHRASE_VARIABLE} or run on a terminal"
        ))
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| no_terminal())?;
    let saved = rustix::termios::tcgetattr(&tty).map_err(|_| no_terminal())?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &quiet);
    let restore = EchoBack { tty: &tty, saved };
    let mut out = &tty;
    let _ = out.write_all(prompt.as_bytes());
    wait_for_line(&tty)?;
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    drop(restore);
    read.map_err(|e| Failure::data(format!("cannot read the passphrase: {e}")))?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
    ))
}

/// Waits until the terminal has a whole line (or its end) to read, or a signal asks to stop.
fn wait_for_line(tty: &std::fs::File) -> Result<(), Failure> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let step = Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    loop {
        if crate::interrupt::stopped() {
            return Err(Failure::interrupted(
                "no passphrase was given; nothing was written",
            ));
        }
        let mut fds = [PollFd::new(tty, PollFlags::IN)];
        match poll(&mut fds, Some(&step)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => {
                return Err(Failure::data(format!(
                    "cannot read the passphrase: {}",
                    std::io::Error::from(e)
                )));
            }
        }
    }
}

/// Puts the terminal's modes back (echo on) when dropped, and ends the prompt's line.
struct EchoBack<'a> {
    tty: &'a std::fs::File,
    saved: rustix::termios::Termios,
}

impl Drop for EchoBack<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            self.tty,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
        let mut out = self.tty;
        let _ = out.write_all(b"\n");
    }
}

/// The key in the key file at `path`, opened with its passphrase if it has one.
pub(crate) fn load_key(path: &Path) -> Result<Arc<CryptKey>, Failure> {
    let file = KeyFile::load(path).map_err(|e| Failure::error(e).context(path))?;
    let passphrase = if file.needs_passphrase() {
        Some(passphrase(&path.display().to_string(), false)?)
    } else {
        None
    };
    let key = file
        .decrypt(passphrase.as_deref().map(Vec::as_slice))
        .map_err(|e| Failure::error(e).context(path))?;
    Ok(Arc::new(key))
}

/// Runs `cairn key`.
pub(crate) async fn run(args: &KeyArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    match &args.command {
        KeyCommand::Create { kdf, file } => {
            if file.exists() {
                return Err(Failure::usage(format!(
                    "{}: exists; a key file is never overwritten",
                    file.display()
                )));
            }
            let name = match kdf {
                KdfArg::Scrypt => "scrypt",
                KdfArg::Pbkdf2 => "pbkdf2",
                KdfArg::None => "none",
            };
            let kdf = Kdf::new(name).map_err(Failure::error)?;
            let secret = if matches!(kdf, Kdf::None) {
                None
            } else {
                Some(passphrase("the new key", true)?)
            };
            let key =
                CryptKey::random().map_err(|e| Failure::data(format!("no random key: {e}")))?;
            let made = KeyFile::create(&key, kdf, secret.as_deref().map(Vec::as_slice))
                .map_err(|e| Failure::usage(crate::chain(&e)))?;
            made.store_new(file)
                .map_err(|e| Failure::error(e).context(file))?;
            if !quiet {
                eprintln!(
                    "cairn: wrote {} ({name}), fingerprint {}",
                    file.display(),
                    key.fingerprint()
                );
            }
            Ok(())
        }
        KeyCommand::Show { json, file } => {
            // A FIFO may wait for ever for its writer: off this thread.
            let path = file.clone();
            let key_file = unless_stopped(stop, "nothing was shown", move || {
                KeyFile::load(&path).map_err(|e| Failure::error(e).context(&path))
            })
            .await?;
            let fingerprint = key_file.fingerprint().map(|f| f.to_string());
            if *json {
                let value = json!({
                    "path": file.display().to_string(),
                    "kdf": key_file.kdf().name(),
                    "created": key_file.created(),
                    "modified": key_file.modified(),
                    "fingerprint": fingerprint,
                    "hint": key_file.hint(),
                });
                println!("{value}");
            } else {
                println!("path:        {}", file.display());
                println!("kdf:         {}", key_file.kdf().name());
                println!("created:     {}", key_file.created());
                println!("modified:    {}", key_file.modified());
                println!(
                    "fingerprint: {}",
                    fingerprint.as_deref().unwrap_or("(not stated)")
                );
                if let Some(hint) = key_file.hint() {
                    println!("hint:        {hint}");
                }
            }
            Ok(())
        }
    }
}
