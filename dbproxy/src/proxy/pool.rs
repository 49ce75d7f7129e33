//! Sessions on threads of their own, each running a current-thread runtime: a session stays on
//! the thread it started on, and a thread with nothing to do sleeps in its own poll. On a
//! work-stealing runtime every wake-up of a busy proxy may park and unpark another worker
//! (a futex and a context switch each time), which can cost as much CPU per statement as the
//! proxy's own work; `benches/db_pgbench` shows the difference side by side. Few threads
//! are better than many: a thread serving many sessions gets several of their wake-ups from
//! one poll.
//!
//! The client stream is handed over unregistered (`open` makes the runtime stream on the
//! session's thread, e.g. `tokio::net::UnixStream::from_std`), because a stream stays bound
//! to the runtime that registered it.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    runtime::{Builder, Handle},
    sync::oneshot,
    task::JoinHandle,
};

use super::{ClientCtx, DbProxy, ProxyError, Served};

/// A fixed set of session threads; sessions are dealt to them in turn.
pub struct SessionPool {
    threads: Vec<(Handle, Option<oneshot::Sender<()>>)>,
    next: AtomicUsize,
}

impl SessionPool {
    /// A pool of `threads` threads (at least one), named `dbproxy-<n>`.
    pub fn new(threads: usize) -> io::Result<SessionPool> {
        let mut out = Vec::new();
        for n in 0..threads.max(1) {
            let rt = Builder::new_current_thread().enable_all().build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new().name(format!("dbproxy-{n}")).spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
            out.push((handle, Some(stop)));
        }
        Ok(SessionPool { threads: out, next: AtomicUsize::new(0) })
    }

    /// Serves one client connection on the next thread: `open` runs there first and gives the
    /// stream (its error fails the session as a client error).
    pub fn serve<C, F>(
        &self,
        proxy: Arc<DbProxy>,
        open: F,
        ctx: ClientCtx,
    ) -> JoinHandle<Result<Served, ProxyError>>
    where
        F: FnOnce() -> io::Result<C> + Send + 'static,
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        self.threads[i].0.spawn(async move {
            let client = open().map_err(ProxyError::client_io("taking over the client stream"))?;
            proxy.serve(client, ctx).await
        })
    }
}

impl Drop for SessionPool {
    /// Stops every thread; sessions still running there are dropped (their sockets close).
    fn drop(&mut self) {
        for (_, stop) in &mut self.threads {
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
        }
    }
}
