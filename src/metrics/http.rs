//! A deliberately small HTTP/1.1 responder for one kind of client: a
//! metrics scraper asking `GET /metrics`.
//!
//! Hand-written rather than a crate: every maintained HTTP server crate
//! either brings an async runtime (hyper, axum) or a thread per connection
//! with no bound on how long a client may hold it (tiny_http), while what
//! is needed here is one thread that no client, slow or hostile, can keep
//! from answering the next one — and nothing that could ever reach the
//! dispatcher's threads. So:
//!
//! * one thread, non-blocking sockets and `poll`: at most
//!   [`Limits::max_connections`] at a time, the oldest closed to make room;
//! * a request head of at most [`Limits::max_head`] bytes, which must
//!   arrive within [`Limits::head_time`]; the answer must be taken within
//!   [`Limits::answer_time`]; then the connection is closed;
//! * one request per connection (`Connection: close`), no request body, no
//!   `Transfer-Encoding`, no obsolete line folding: anything else is a
//!   400 with the reason, an unknown method 405, another HTTP version 505.
//!
//! What to answer is the caller's ([`Handler`]); this module knows nothing
//! of metrics.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, MsgFlags, SockFlag};

use crate::journal::Wakeup;

/// Bounds on what one client may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of request line and headers.
    pub max_head: usize,
    /// Time from connecting to the end of the request head.
    pub head_time: Duration,
    /// Time to take the whole answer.
    pub answer_time: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 8 << 10,
            head_time: Duration::from_secs(5),
            answer_time: Duration::from_secs(10),
            max_connections: 16,
        }
    }
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The target's path, without the query.
    pub path: String,
    /// The `Accept` header, if sent.
    pub accept: Option<String>,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body (not sent for `HEAD`).
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer with `status`.
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8".into(),
            body: format!("{body}\n").into_bytes(),
        }
    }
}

/// Produces the answer to a good request.
pub type Handler<'h> = dyn Fn(&Request) -> Response + 'h;

/// Serves `listener` (a listening stream socket, TCP or `AF_UNIX`) until
/// `stop` is woken. The listener is made non-blocking: a client that
/// connects and resets before it is accepted must not leave `accept`
/// waiting for the next one.
pub fn serve(listener: &OwnedFd, limits: Limits, stop: &Wakeup, handler: &Handler<'_>) {
    if let Err(e) = crate::uds::set_nonblocking(listener) {
        tracing::error!("metrics endpoint: cannot make the socket non-blocking: {e}; not serving");
        return;
    }
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let now = Instant::now();
        conns.retain(|c| c.deadline > now && c.phase != Phase::Done);
        let next = conns.iter().map(|c| c.deadline).min();
        let wait = next
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let mut fds = vec![
            PollFd::new(stop.fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(conns.iter().map(|c| PollFd::new(c.fd.as_fd(), c.wants())));
        match nix::poll::poll(&mut fds, timeout(wait)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("metrics endpoint: poll: {e}; no longer serving");
                return;
            }
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !ready[0].is_empty() {
            return;
        }
        for (c, ev) in conns.iter_mut().zip(&ready[2..]) {
            if !ev.is_empty() {
                c.progress(&limits, handler);
            }
        }
        if !ready[1].is_empty() {
            accept(listener, &limits, &mut conns);
        }
    }
}

fn timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.as_millis().clamp(1, 1000) as i32).unwrap_or(PollTimeout::MAX)
}

/// Takes every waiting connection, closing the oldest ones beyond the
/// limit.
fn accept(listener: &OwnedFd, limits: &Limits, conns: &mut Vec<Conn>) {
    loop {
        let fd = match socket::accept4(
            std::os::fd::AsRawFd::as_raw_fd(listener),
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        ) {
            // SAFETY: accept4 returned a new descriptor we own.
            Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return,
            // The peer left before we took it, or descriptors ran out for a
            // moment: try again at the next readiness.
            Err(e) => {
                tracing::debug!("metrics endpoint: accept: {e}");
                return;
            }
        };
        if conns.len() >= limits.max_connections {
            // The oldest has had the longest time to send its request.
            conns.remove(0);
        }
        conns.push(Conn {
            fd,
            head: Vec::new(),
            phase: Phase::Reading,
            deadline: Instant::now() + limits.head_time,
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Sending the answer.
    Writing { out: Vec<u8>, sent: usize },
    /// Answer sent and our side shut: reading (and discarding) until the
    /// client closes, so that unread request bytes do not make the kernel
    /// reset the connection before the client read the answer.
    Draining,
    /// Finished.
    Done,
}

struct Conn {
    fd: OwnedFd,
    head: Vec<u8>,
    phase: Phase,
    deadline: Instant,
}

impl Conn {
    fn wants(&self) -> PollFlags {
        match self.phase {
            Phase::Writing { .. } => PollFlags::POLLOUT,
            _ => PollFlags::POLLIN,
        }
    }

    fn progress(&mut self, limits: &Limits, handler: &Handler<'_>) {
        match &mut self.phase {
            Phase::Reading => self.read_head(limits, handler),
            Phase::Writing { out, sent } => {
                match socket::send(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    &out[*sent..],
                    MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(n) => *sent += n,
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(_) => self.phase = Phase::Done,
                }
                if matches!(self.phase, Phase::Writing { ref out, sent } if sent == out.len()) {
                    let _ = socket::shutdown(
                        std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                        socket::Shutdown::Write,
                    );
                    self.phase = Phase::Draining;
                }
            }
            Phase::Draining => {
                let mut sink = [0u8; 4096];
                match socket::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    &mut sink,
                    MsgFlags::empty(),
                ) {
                    Ok(0) => self.phase = Phase::Done,
                    Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(_) => self.phase = Phase::Done,
                }
            }
            Phase::Done => {}
        }
    }

    fn read_head(&mut self, limits: &Limits, handler: &Handler<'_>) {
        let mut chunk = [0u8; 2048];
        let room = (limits.max_head + 4 - self.head.len()).min(chunk.len());
        let n = match socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            &mut chunk[..room],
            MsgFlags::empty(),
        ) {
            Ok(0) => {
                self.phase = Phase::Done;
                return;
            }
            Ok(n) => n,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return,
            Err(_) => {
                self.phase = Phase::Done;
                return;
            }
        };
        // Only the new bytes (and the three before them) can complete the
        // terminator.
        let from = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(&chunk[..n]);
        let end = memchr::memmem::find(&self.head[from..], b"\r\n\r\n").map(|i| from + i);
        let (response, head_only) = match end {
            Some(end) if end <= limits.max_head => match parse_head(&self.head[..end]) {
                Ok(req) => (handler(&req), req.method == "HEAD"),
                Err(rejected) => (rejected, false),
            },
            _ if self.head.len() > limits.max_head => (
                Response::text(
                    431,
                    &format!(
                        "request head larger than {} bytes; only GET /metrics is served here",
                        limits.max_head
                    ),
                ),
                false,
            ),
            _ => return,
        };
        self.head = Vec::new();
        self.phase = Phase::Writing {
            out: encode(&response, head_only),
            sent: 0,
        };
        self.deadline = Instant::now() + limits.answer_time;
    }
}

/// The reason phrase of the status codes this module uses.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The response as sent: status line, headers, and the body unless the
/// request was `HEAD`.
pub fn encode(r: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    )
    .into_bytes();
    if r.status == 405 {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

/// Whether `b` may appear in a header name or method (RFC 9110 `tchar`).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a request head (without its final blank line): the request or
/// the answer that refuses it.
pub fn parse_head(head: &[u8]) -> Result<Request, Response> {
    let bad = |why: &str| Response::text(400, why);
    let text = std::str::from_utf8(head).map_err(|_| bad("the request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(bad("the method is not a token"));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => {
            return Err(Response::text(505, "only HTTP/1.1 and HTTP/1.0 are served"))
        }
        _ => return Err(bad("the request line does not end with an HTTP version")),
    };
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("the target is not an absolute path"));
    }
    let mut accept = None;
    let mut hosts = 0;
    for l in lines {
        if l.starts_with([' ', '\t']) {
            return Err(bad("folded header lines are not accepted"));
        }
        if l.contains(['\r', '\n']) {
            return Err(bad("a header line holds a bare CR or LF"));
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(bad("a header line has no colon"));
        };
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(bad("a header name is not a token"));
        }
        let value = value.trim_matches([' ', '\t']);
        match name.to_ascii_lowercase().as_str() {
            "host" => hosts += 1,
            "accept" => accept = Some(value.to_string()),
            "transfer-encoding" => return Err(bad("a request body is not accepted")),
            "content-length" if value != "0" => return Err(bad("a request body is not accepted")),
            _ => {}
        }
    }
    if hosts > 1 || (http11 && hosts == 0) {
        return Err(bad("an HTTP/1.1 request needs exactly one Host header"));
    }
    if method != "GET" && method != "HEAD" {
        return Err(Response::text(405, "only GET and HEAD are served"));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        accept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &str) -> u16 {
        match parse_head(head.as_bytes()) {
            Ok(_) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn a_scrape_request_is_taken_apart() {
        let r = parse_head(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9469\r\nAccept: text/plain;version=0.0.4\r\nUser-Agent: Prometheus/2.45\r\nContent-Length: 0",
        )
        .unwrap();
        assert_eq!(
            r,
            Request {
                method: "GET".into(),
                path: "/metrics".into(),
                accept: Some("text/plain;version=0.0.4".into()),
            }
        );
        assert_eq!(status("HEAD / HTTP/1.0"), 200);
    }

    #[test]
    fn anything_else_is_refused_with_the_right_status() {
        for (head, want) in [
            ("GET /metrics HTTP/1.1", 400),
            ("GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b", 400),
            ("GET  /metrics HTTP/1.1\r\nHost: a", 400),
            ("GET /metrics\r\nHost: a", 400),
            ("GET metrics HTTP/1.1\r\nHost: a", 400),
            ("GET /metrics HTTP/1.1\r\nHost: a\r\n folded", 400),
            ("GET /metrics HTTP/1.1\r\nHost: a\r\nno colon", 400),
            ("GET /metrics HTTP/1.1\r\nHost : a", 400),
            ("GET /metrics HTTP/1.1\r\nHost: a\nX: b", 400),
            ("GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5", 400),
            (
                "GET /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
                400,
            ),
            ("G(T /metrics HTTP/1.1\r\nHost: a", 400),
            ("GET /metrics FTP/1.0", 400),
            ("POST /metrics HTTP/1.1\r\nHost: a", 405),
            ("GET /metrics HTTP/2.0\r\nHost: a", 505),
        ] {
            assert_eq!(status(head), want, "{head:?}");
        }
        assert_eq!(
            parse_head(b"GET /\xff HTTP/1.1").unwrap_err().status,
            400,
            "not UTF-8"
        );
    }

    /// A server on a loopback port with `limits`, answering "ok" to every
    /// good request; stopped (and checked to stop) when dropped.
    struct Server {
        addr: std::net::SocketAddr,
        stop: std::sync::Arc<Wakeup>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        fn start(limits: Limits) -> Server {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let fd = OwnedFd::from(l);
            let stop = std::sync::Arc::new(Wakeup::new().unwrap());
            let s = stop.clone();
            let thread = std::thread::spawn(move || {
                serve(&fd, limits, &s, &|r: &Request| {
                    Response::text(200, &format!("ok {}", r.path))
                })
            });
            Server {
                addr,
                stop,
                thread: Some(thread),
            }
        }

        fn connect(&self) -> std::net::TcpStream {
            let c = std::net::TcpStream::connect(self.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        }

        /// Sends `request` and reads the answer to its end.
        fn ask(&self, request: &[u8]) -> String {
            use std::io::{Read, Write};
            let mut c = self.connect();
            c.write_all(request).unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            answer
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.wake();
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    const GOOD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn slow_and_hostile_clients_do_not_keep_others_from_an_answer() {
        use std::io::{Read, Write};
        let limits = Limits {
            max_head: 1024,
            head_time: Duration::from_millis(500),
            answer_time: Duration::from_secs(5),
            max_connections: 4,
        };
        let server = Server::start(limits);
        // More idle half-requests than there are slots.
        let mut slow: Vec<std::net::TcpStream> = (0..10)
            .map(|_| {
                let mut c = server.connect();
                c.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
                c
            })
            .collect();
        let answer = server.ask(GOOD);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok /metrics\n"), "{answer}");
        // Each slow client is closed: pushed out, or out of time.
        for c in &mut slow {
            let mut rest = Vec::new();
            assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0);
        }
        // Too long, garbage, a body: refused with the reason.
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        big.resize(5000, b'a');
        let answer = server.ask(&big);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let answer = server.ask(b"\x16\x03\x01\x02\x00\x01\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        let answer =
            server.ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(
            answer.ends_with("a request body is not accepted\n"),
            "{answer}"
        );
        // HEAD: the headers alone.
        let answer = server.ask(b"HEAD /x HTTP/1.0\r\n\r\n");
        assert!(
            answer.ends_with("Content-Length: 6\r\nConnection: close\r\n\r\n"),
            "{answer}"
        );
        // And still serving.
        assert!(server.ask(GOOD).starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn responses_close_the_connection_and_head_has_no_body() {
        let r = Response::text(405, "no");
        let full = String::from_utf8(encode(&r, false)).unwrap();
        assert_eq!(
            full,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\nno\n"
        );
        let head = String::from_utf8(encode(&r, true)).unwrap();
        assert!(head.ends_with("Allow: GET, HEAD\r\n\r\n"), "{head}");
    }
}
