//! Cancellation. On cancel the Actions runner signals the step's container: SIGINT, then SIGTERM,
//! then a kill about ten seconds later. The binary is PID 1 there, and PID 1 gets no default
//! action for either signal, so without these handlers a cancel would be ignored until the kill.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Cancel {
    interrupt: Signal,
    terminate: Signal,
}

impl Cancel {
    /// From now on SIGINT and SIGTERM are noted instead of ending the process; `cancelled`
    /// reports the first. Signals that come later (the runner's escalation) are ignored, so that a
    /// rollback under way is not cut short by them.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for a cancel; says which signal it was.
    pub async fn cancelled(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
