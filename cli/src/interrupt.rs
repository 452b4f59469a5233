//! SIGINT and SIGTERM: a command is told to stop, finishes the work it has in flight, removes
//! its temporary files, and the process exits 130 or 143 with one line saying so.

use std::io;

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
}

impl Signal {
    /// The exit code of a process stopped by this signal: 128 + its number, as shells report.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
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
    /// Starts listening for SIGINT and SIGTERM on the current runtime.
    ///
    /// # Errors
    /// If the signal handlers cannot be installed.
    pub(crate) fn listen() -> io::Result<Self> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (sender, received) = watch::channel(Received::default());
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    Some(()) = interrupt.recv() => Signal::Interrupt,
                    Some(()) = terminate.recv() => Signal::Terminate,
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
