//! SIGINT, SIGTERM and SIGHUP: a command is told to stop, finishes the work it has in flight,
//! removes its temporary files, and the process exits 130, 143 or 129 with one line saying so.
//!
//! The signals are heard by a task on the runtime's workers, never by the thread that runs the
//! command: I/O that may wait for ever (opening a FIFO nobody writes, reading a stalled pipe, a
//! terminal prompt) runs off that thread ([`unless_stopped`]) or looks at [`stopped`] while it
//! waits, so the first signal always ends the command.

use std::io;
use std::sync::OnceLock;

use crate::Failure;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A signal that stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP (the terminal went away).
    Hangup,
}

impl Signal {
    /// The exit code of a process stopped by this signal: 128 + its number, as shells report.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
            Self::Hangup => 129,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::Hangup => "SIGHUP",
        }
    }
}

/// What has arrived: the first signal, and how many.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    first: Option<Signal>,
    count: u32,
}

/// Tells a command whether it should stop. Cheap to clone; every clone sees the same signals.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    received: watch::Receiver<Received>,
    /// Cancelled by the first signal: what the library engines watch.
    token: CancellationToken,
}

impl Stop {
    /// Starts listening for SIGINT, SIGTERM and SIGHUP on the current runtime.
    ///
    /// # Errors
    /// If the signal handlers cannot be installed.
    pub(crate) fn listen() -> io::Result<Self> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let (sender, received) = watch::channel(Received::default());
        let token = CancellationToken::new();
        let _ = STOPPED.set(token.clone());
        let cancel = token.clone();
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    Some(()) = interrupt.recv() => Signal::Interrupt,
                    Some(()) = terminate.recv() => Signal::Terminate,
                    Some(()) = hangup.recv() => Signal::Hangup,
                    else => return,
                };
                sender.send_modify(|r| {
                    r.first.get_or_insert(signal);
                    r.count += 1;
                });
                cancel.cancel();
            }
        });
        Ok(Self { received, token })
    }

    /// The token the first signal cancels.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The signal that asked to stop, if one has.
    pub(crate) fn signal(&self) -> Option<Signal> {
        self.received.borrow().first
    }

    /// Waits until a stop is asked for.
    pub(crate) async fn stopped(&self) {
        self.signals(1).await;
    }

    /// Waits until `n` signals have arrived (the second one means "stop now").
    pub(crate) async fn signals(&self, n: u32) {
        let mut received = self.received.clone();
        if received.wait_for(|r| r.count >= n).await.is_err() {
            // The listener is gone (the runtime is shutting down): no signal will come.
            std::future::pending::<()>().await;
        }
    }
}

/// The token of the process's signals, once they are listened for.
static STOPPED: OnceLock<CancellationToken> = OnceLock::new();

/// Whether a signal has asked the process to stop: for code on a blocking thread (a prompt)
/// that waits in steps and must give up when one comes.
pub(crate) fn stopped() -> bool {
    STOPPED.get().is_some_and(CancellationToken::is_cancelled)
}

/// Runs blocking `work` that may wait for ever (opening a FIFO no one writes, reading a stalled
/// pipe, a prompt) on a blocking thread, and stops waiting for it at the first signal: the
/// command then fails as interrupted, saying `left`, and the thread is left behind (the
/// process exits without waiting for it).
pub(crate) async fn unless_stopped<T, F>(stop: &Stop, left: &str, work: F) -> Result<T, Failure>
where
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    let mut task = tokio::task::spawn_blocking(work);
    let joined = tokio::select! {
        joined = &mut task => joined,
        () = stop.token().cancelled() => {
            // Work that watches for signals itself (a prompt, which then puts the terminal
            // back) ends within a moment: it is waited for that long, and no longer.
            match tokio::time::timeout(GRACE, &mut task).await {
                Ok(joined) => joined,
                Err(_) => return Err(Failure::interrupted(left)),
            }
        }
    };
    joined.unwrap_or_else(|e| Err(Failure::data(format!("a blocking task failed: {e}"))))
}

/// How long work on a blocking thread is given to end by itself after a signal.
const GRACE: std::time::Duration = std::time::Duration::from_millis(300);
