//! Shutdown: stop accepting, finish what is in flight within `--shutdown-timeout-ms`, close.

use super::Proxy;
use crate::conns::Conn;
use crate::resp;
use log::{error, info, warn};
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

impl Proxy {
    pub(super) fn begin_shutdown(&mut self, why: &str) {
        if self.draining_until.is_some() {
            return;
        }
        info!("shutting down ({why}): no new connections, finishing in-flight requests");
        for mut l in [self.listener.take(), self.tls_listener.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.draining_until = Some(self.now + self.config.shutdown_timeout);
        let tokens = self.conns.tokens(|c| matches!(c, Conn::Client(_)));
        for t in tokens {
            // Clients are no longer read, so a request still streaming in cannot finish.
            self.abort_stream(t, resp::error("ERR respite is shutting down"));
            self.mark_client_dirty(t);
        }
    }

    pub(super) fn drained(&mut self) -> bool {
        let deadline_passed = self.draining_until.is_some_and(|d| self.now >= d);
        let busy = self.conns.clients().any(|(_, c)| !c.is_idle());
        if busy && !deadline_passed {
            return false;
        }
        if busy {
            warn!("shutdown timeout: closing clients with requests in flight");
        }
        let tokens = self.conns.tokens(|_| true);
        for t in tokens {
            self.remove(t);
        }
        self.clients = 0;
        self.stats.tls.clients = 0;
        true
    }
}

/// Stops a running proxy from another thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Asks the loop to stop accepting, finish in-flight requests and return.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the event loop: {e}");
        }
    }
}

impl Proxy {
    /// A handle that stops the loop from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }
}
