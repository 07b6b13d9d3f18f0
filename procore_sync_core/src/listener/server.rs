//! The network thread: accepting within the connection cap, TLS, hyper's HTTP/1 per
//! connection with our own header and idle deadlines, and each request read whole and
//! handed to the main thread's queue.

use std::convert::Infallible;
use std::future::{pending, poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;

use super::{Answer, Counters, Incoming, ListenerConfig};
use crate::procore::Secret;

/// hyper's read buffer, which also caps a request's header: 64 KiB is far above any
/// header Procore or a proxy sends, and keeps a connection's fixed cost small.
const READ_BUFFER: usize = 64 * 1024;

/// How long, and how much, to read and drop after answering a request whose body was left
/// unread (413, 408), before closing.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// What the network thread needs, shared by every connection.
pub(super) struct Shared {
    pub(super) config: ListenerConfig,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) queue: SyncSender<Incoming>,
    pub(super) counters: Arc<Counters>,
}

pub(super) async fn accept_loop(
    socket: TcpListener,
    shared: Shared,
    mut stopped: watch::Receiver<bool>,
) {
    let shared = Arc::new(shared);
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            // A closed channel means the Listener is gone too.
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors and the like: the error repeats until something
                // closes, so pause instead of spinning on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        Counters::bump(&shared.counters.connections_accepted);
        // Over the cap the connection is closed at once rather than left in the backlog:
        // the client learns now instead of after its own timeout, and the accept loop
        // never waits for a slot.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            Counters::bump(&shared.counters.connections_refused);
            drop(stream);
            continue;
        };
        let open = OpenConnection::new(shared.counters.clone(), slot);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, shared).await;
            drop(open);
        });
    }
}

/// A connection's slot under the cap; counted open until dropped, even when the runtime
/// drops the task at shutdown.
struct OpenConnection {
    counters: Arc<Counters>,
    _slot: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(counters: Arc<Counters>, slot: OwnedSemaphorePermit) -> OpenConnection {
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            counters,
            _slot: slot,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let accepted_at = Instant::now();
    match shared.tls.clone() {
        None => serve_http(stream, peer, shared, accepted_at).await,
        // The handshake counts against the header deadline, so a client that connects
        // and stalls holds its slot no longer than one that stalls in its header.
        Some(acceptor) => {
            let deadline = accepted_at + shared.config.header_timeout;
            match timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_http(stream, peer, shared, accepted_at).await,
                // Not TLS (a plain-HTTP client) or a failed handshake: nothing to answer.
                Ok(Err(_)) => {}
                Err(_) => Counters::bump(&shared.counters.connections_timed_out),
            }
        }
    }
}

/// Where a connection is, for the two deadlines we keep ourselves: hyper's
/// `header_read_timeout` starts as soon as a connection waits for a request, so it cannot
/// tell a slow header from a quiet kept-alive connection.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head since then: `header_timeout` from that instant.
    Head(Instant),
    /// A request is being read or answered; its own timeouts bound it.
    Busy,
    /// Answered, waiting for the next request: `idle_timeout` from the last byte written.
    Idle(Instant),
}

async fn serve_http<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>, accepted_at: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(watch::Sender::new(Phase::Head(accepted_at)));
    let mut watch_phase = phase.subscribe();
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
    });
    let config = &shared.config;
    let (header_timeout, idle_timeout) = (config.header_timeout, config.idle_timeout);
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |request| {
            let busy = Busy::enter(phase.clone());
            let shared = shared.clone();
            // Boxed so the connection is Unpin, which `poll_without_shutdown` needs.
            let answer: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
                let response = answer(request, peer, &shared).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            });
            answer
        })
    };
    let mut connection = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(READ_BUFFER)
        .serve_connection(io, service);

    let finished = loop {
        let deadline = match *watch_phase.borrow_and_update() {
            Phase::Head(since) => Some((since + header_timeout, true)),
            Phase::Idle(since) => Some((since + idle_timeout, false)),
            Phase::Busy => None,
        };
        tokio::select! {
            finished = poll_fn(|cx| connection.poll_without_shutdown(cx)) => break finished,
            Ok(()) = watch_phase.changed() => {}
            slow_header = after(deadline) => {
                if slow_header {
                    Counters::bump(&shared.counters.connections_timed_out);
                }
                return;
            }
        }
    };
    if finished.is_ok() {
        linger(connection.into_parts().io.into_inner()).await;
    }
}

/// Resolves at the deadline with its flag, or never.
async fn after(deadline: Option<(Instant, bool)>) -> bool {
    match deadline {
        Some((at, flag)) => {
            sleep_until(at).await;
            flag
        }
        None => pending().await,
    }
}

/// Closing right after answering a request whose body was left unread would make the
/// kernel answer the client's next bytes with a reset, which can destroy the answer before
/// the client reads it. So: end our side, then read and drop for a moment. A client that
/// closed cleanly costs one read that returns at once.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let _ = timeout(LINGER, async {
        io.shutdown().await?;
        let mut sink = [0u8; 8192];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match io.read(&mut sink).await? {
                0 => break,
                n => dropped += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Marks the connection busy while a request is being answered.
struct Busy(Arc<watch::Sender<Phase>>);

impl Busy {
    fn enter(phase: Arc<watch::Sender<Phase>>) -> Busy {
        phase.send_replace(Phase::Busy);
        Busy(phase)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_replace(Phase::Idle(Instant::now()));
    }
}

/// The connection's stream, telling the phase when bytes move: the first byte of a request
/// starts its header deadline, and writing an answer restarts the idle one.
struct Watched<S> {
    inner: S,
    phase: Arc<watch::Sender<Phase>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.send_if_modified(|phase| match phase {
                Phase::Idle(_) => {
                    *phase = Phase::Head(Instant::now());
                    true
                }
                _ => false,
            });
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Watched<S> {
    fn wrote(&self) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Idle(since) => {
                *since = Instant::now();
                true
            }
            _ => false,
        });
    }
}

/// One request: its body within the limits, then the main thread's answer within
/// `answer_timeout`.
async fn answer(
    request: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let (config, counters) = (&shared.config, &shared.counters);
    let (head, body) = request.into_parts();
    let limit = config.max_body_bytes;
    // A declared length over the limit is refused before a byte of the body is read.
    if body.size_hint().lower() > limit as u64 {
        Counters::bump(&counters.requests_too_large);
        return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let body = match timeout(config.body_timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(body)) => body.to_bytes().to_vec(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            Counters::bump(&counters.requests_too_large);
            return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        Ok(Err(_)) => return closing(StatusCode::BAD_REQUEST, "unreadable request body\n"),
        Err(_) => {
            Counters::bump(&counters.requests_body_timed_out);
            return closing(StatusCode::REQUEST_TIMEOUT, "request body too slow\n");
        }
    };

    let (reply, answered) = oneshot::channel();
    let incoming = Incoming {
        method: head.method.as_str().to_owned(),
        path: head.uri.path().to_owned(),
        query: head.uri.query().unwrap_or_default().to_owned(),
        peer,
        authorization: header_text(&head.headers, &AUTHORIZATION).map(Secret::new),
        content_type: header_text(&head.headers, &CONTENT_TYPE),
        body,
        reply,
    };
    match shared.queue.try_send(incoming) {
        Ok(()) => Counters::bump(&counters.requests_queued),
        Err(TrySendError::Full(_)) => {
            Counters::bump(&counters.requests_queue_full);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "busy, try again later\n");
        }
        Err(TrySendError::Disconnected(_)) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        }
    }
    match timeout(config.answer_timeout, answered).await {
        Ok(Ok(answer)) => main_thread_response(answer),
        Ok(Err(_)) => plain(StatusCode::INTERNAL_SERVER_ERROR, "no answer\n"),
        Err(_) => {
            Counters::bump(&counters.requests_answer_late);
            plain(StatusCode::SERVICE_UNAVAILABLE, "busy, try again later\n")
        }
    }
}

fn main_thread_response(answer: Answer) -> Response<Full<Bytes>> {
    // An informational status would leave the client waiting for a final one.
    let status = match StatusCode::from_u16(answer.status) {
        Ok(status) if !status.is_informational() => status,
        _ => return plain(StatusCode::INTERNAL_SERVER_ERROR, "bad answer\n"),
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, answer.content_type)
        .body(Full::from(answer.body))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad answer\n"))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// For answers that leave the request's body unread: the connection cannot carry
/// another request.
fn closing(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = plain(status, text);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A header's value as text; bytes that are not UTF-8 become U+FFFD, so such a value
/// never matches a configured one.
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}
