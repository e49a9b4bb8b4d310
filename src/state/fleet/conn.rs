//! One multiplexed connection to Redis. Callers queue pipelines; a writer task sends whatever
//! is queued in one write, a reader task hands replies back in order (Redis answers a connection's
//! commands in the order it received them, so the oldest waiting pipeline owns the next reply).

use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::resp::{self, Value};

/// Pipelines waiting to be written; a full queue answers "unavailable" at once rather than
/// letting a stalled Redis hold request memory.
const QUEUE: usize = 4096;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 << 10;

/// Where a pipeline's replies go.
pub enum Sink {
    /// Someone waits for them.
    Wait(oneshot::Sender<Vec<Value>>),
    /// Nobody waits (fire-and-forget); an error reply is counted under this operation name.
    Discard(&'static str),
}

struct Pending {
    replies: usize,
    got: Vec<Value>,
    sink: Sink,
}

struct Cmd {
    bytes: Vec<u8>,
    replies: usize,
    sink: Sink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error("not connected")]
    Closed,
    #[error("too many commands queued")]
    Busy,
    #[error("timed out")]
    Timeout,
}

pub struct Conn {
    tx: mpsc::Sender<Cmd>,
    closed: Arc<Closed>,
    tasks: [JoinHandle<()>; 2],
}

#[derive(Default)]
pub struct Closed {
    flag: AtomicBool,
    notify: Notify,
}

impl Closed {
    fn close(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

impl Conn {
    pub async fn connect(addr: &str, within: Duration) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(within, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Cmd>(QUEUE);
        let queue: Arc<Mutex<VecDeque<Pending>>> = Arc::default();
        let closed: Arc<Closed> = Arc::default();

        let writer = {
            let queue = queue.clone();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(WRITE_BATCH);
                while let Some(first) = rx.recv().await {
                    buf.clear();
                    // Queued before written: the reader must find a pipeline's entry before its
                    // first reply can arrive.
                    let enqueue = |c: Cmd, buf: &mut Vec<u8>| {
                        buf.extend_from_slice(&c.bytes);
                        lock(&queue).push_back(Pending {
                            replies: c.replies,
                            got: Vec::with_capacity(c.replies),
                            sink: c.sink,
                        });
                    };
                    enqueue(first, &mut buf);
                    while buf.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(c) => enqueue(c, &mut buf),
                            Err(_) => break,
                        }
                    }
                    if wr.write_all(&buf).await.is_err() {
                        break;
                    }
                }
                closed.close();
            })
        };
        let reader = {
            let queue = queue.clone();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(16 << 10);
                'read: loop {
                    loop {
                        match resp::parse(&mut buf) {
                            Ok(Some(v)) => {
                                if !deliver(&queue, v) {
                                    break 'read;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => break 'read,
                        }
                    }
                    match rd.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                closed.close();
                // Dropping the sinks tells every waiter the connection is gone.
                lock(&queue).clear();
            })
        };
        Ok(Conn {
            tx,
            closed,
            tasks: [writer, reader],
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the connection is lost.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed.notify.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Queues a pipeline of `replies` commands already encoded in `bytes`.
    pub fn send(&self, bytes: Vec<u8>, replies: usize, sink: Sink) -> Result<(), ConnError> {
        if self.is_closed() {
            return Err(ConnError::Closed);
        }
        self.tx
            .try_send(Cmd {
                bytes,
                replies,
                sink,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ConnError::Busy,
                mpsc::error::TrySendError::Closed(_) => ConnError::Closed,
            })
    }

    /// Sends a pipeline and waits at most `within` for all its replies.
    pub async fn call(
        &self,
        bytes: Vec<u8>,
        replies: usize,
        within: Duration,
    ) -> Result<Vec<Value>, ConnError> {
        let (tx, rx) = oneshot::channel();
        self.send(bytes, replies, Sink::Wait(tx))?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ConnError::Closed),
            Err(_) => Err(ConnError::Timeout),
        }
    }

    /// Drops the connection now; waiters are told it is gone.
    pub fn shut(&self) {
        self.closed.close();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Hands one reply to the oldest waiting pipeline; false when nobody was waiting for it (the
/// stream is out of step and must be dropped).
fn deliver(queue: &Mutex<VecDeque<Pending>>, v: Value) -> bool {
    let mut q = lock(queue);
    let Some(front) = q.front_mut() else {
        return false;
    };
    front.got.push(v);
    if front.got.len() < front.replies {
        return true;
    }
    let Some(done) = q.pop_front() else {
        return false;
    };
    drop(q);
    match done.sink {
        // The waiter may have timed out and gone; its answer is simply not needed any more.
        Sink::Wait(tx) => {
            let _ = tx.send(done.got);
        }
        Sink::Discard(op) => {
            if done.got.iter().any(|v| matches!(v, Value::Error(_))) {
                crate::metrics::state_error(op);
            }
        }
    }
    true
}

/// The queue's lock guards plain data that no panic can leave half-updated, so a poisoned lock
/// is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
