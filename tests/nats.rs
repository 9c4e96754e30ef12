//! audisp-nats end to end with real parts: Debian's nats-server (single
//! node with file storage, and a three-node cluster on loopback with an R3
//! stream), audispd on the sending side with `audisp-nats publish`, and an
//! aggregating audispd fed by `audisp-nats consume`, with a stock-format
//! plugin (`cat`) behind it. Every test counts records in and out: the
//! stock plugin must get every record once, byte for byte, whatever was
//! killed on the way.
#![cfg(feature = "nats")]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::dispatcher::{lines, sample, sample_copies, state_line, Dispatcher};
use support::wait_until;

const NATS: &str = env!("CARGO_BIN_EXE_audisp-nats");
const NATS_SERVER: &str = "/usr/sbin/nats-server";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    (!Path::new(NATS_SERVER).exists())
        .then(|| "needs Debian's nats-server (apt-get install nats-server)".to_string())
}

/// The status of `GET path` on the monitoring port, if it answered.
fn http_status(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// One nats-server process with its own config and store.
struct Server {
    name: String,
    dir: PathBuf,
    port: u16,
    http: u16,
    child: Option<Child>,
}

impl Server {
    /// Writes the config (`extra` appended) and starts the server; waits
    /// for its health endpoint (`/healthz`, JetStream current) to say so.
    fn start(dir: &Path, name: &str, extra: &str) -> Server {
        let port = free_port();
        Server::start_on(dir, name, port, extra)
    }

    fn start_on(dir: &Path, name: &str, port: u16, extra: &str) -> Server {
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let http = free_port();
        std::fs::write(
            dir.join("nats.conf"),
            format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n\
                 jetstream {{ store_dir: \"{}\" }}\n{extra}\n",
                dir.join("store").display()
            ),
        )
        .unwrap();
        let mut s = Server {
            name: name.to_string(),
            dir,
            port,
            http,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        self.child = Some(
            Command::new(NATS_SERVER)
                .arg("-c")
                .arg(self.dir.join("nats.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start nats-server"),
        );
    }

    /// Waits until the monitoring port says JetStream is up (`path`:
    /// `/healthz` for a cluster member, whose meta group needs a leader).
    fn wait_healthy(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_status(self.http, path).map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{} not healthy within 60 s\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A single server with JetStream on file storage.
fn single(dir: &Path, extra: &str) -> Server {
    let s = Server::start(dir, "n1", extra);
    s.wait_healthy("/healthz?js-enabled-only=true");
    s
}

/// Runs `audisp-nats ARGS` to its end; (success, stdout + stderr).
fn nats_tool(args: &[&str]) -> (bool, String) {
    let out = Command::new(NATS)
        .args(args)
        .env_remove("AUDISP_NATS_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Creates the stream with `audisp-nats create-stream` (retried while a
/// fresh cluster cannot place it yet).
fn create_stream(servers: &[String], extra: &[&str]) {
    let mut args = vec!["create-stream", "--no-config"];
    for s in servers {
        args.extend(["--server", s]);
    }
    args.extend(extra);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = nats_tool(&args);
        if ok {
            assert!(out.contains("stream \"AUDIT\" created"), "{out}");
            return;
        }
        assert!(Instant::now() < deadline, "create-stream: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sending host: audispd fed `data` on standard input, with the
/// publishing plugin's socket in its plugins.d.
fn sending_host() -> Dispatcher {
    let mut d = Dispatcher::new("[stats]\ninterval = \"0\"\n");
    d.write_plugin(
        "nats",
        "socket = \"{dir}/run/nats.sock\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n",
    );
    d.start(Stdio::piped()).unwrap();
    d
}

/// Writes `data` to audispd's standard input and returns the pipe, to be
/// kept open until the end of the test.
fn keep_feeding(d: &mut Dispatcher, data: &[u8]) -> std::process::ChildStdin {
    let mut stdin = d.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(data).unwrap();
    stdin
}

/// `audisp-nats SUBCOMMAND` as a long-running process, its log in `log`.
fn start_nats(sub: &str, servers: &[String], args: &[&str], log: &Path) -> Child {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(NATS);
    cmd.arg(sub).arg("--no-config");
    for s in servers {
        cmd.arg("--server").arg(s);
    }
    cmd.arg("--retry-max")
        .arg("1")
        .args(args)
        .env_remove("AUDISP_NATS_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start audisp-nats {sub}: {e}"))
}

/// The publisher for sending host `d`.
fn start_publisher(d: &Dispatcher, servers: &[String], extra: &[&str]) -> Child {
    let sock = d.path().join("run/nats.sock");
    let mut args = vec![
        "--listen",
        sock.to_str().unwrap(),
        "--ack-timeout",
        "2s",
        "--host-id",
        "test-host",
    ];
    args.extend(extra);
    start_nats("publish", servers, &args, &d.path().join("publish.log"))
}

/// The aggregating host: audispd with a stock-format plugin (`cat`) that
/// writes every record it gets to `out/stock`, one per line.
fn aggregating_host() -> Dispatcher {
    let mut d = Dispatcher::new("[stats]\ninterval = \"0\"\n");
    d.write_plugin(
        "stock",
        "exec = [\"/bin/sh\", \"-c\", \"exec cat > {dir}/out/stock\"]\nformat = \"string\"\n",
    );
    d.start(Stdio::null()).unwrap();
    d
}

/// The consumer feeding aggregating host `agg`.
fn start_consumer(agg: &Dispatcher, servers: &[String], extra: &[&str]) -> Child {
    let sock = agg.input_socket();
    let state = agg.path().join("consume-state");
    let mut args = vec![
        "--socket",
        sock.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--ack-wait",
        "2s",
    ];
    args.extend(extra);
    start_nats("consume", servers, &args, &agg.path().join("consume.log"))
}

fn log_of(d: &Dispatcher, name: &str) -> String {
    std::fs::read_to_string(d.path().join(name)).unwrap_or_default()
}

/// The records the stock plugin wrote so far (whole lines only).
fn stock_lines(agg: &Dispatcher) -> Vec<Vec<u8>> {
    let mut data = std::fs::read(agg.out("stock")).unwrap_or_default();
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    data.truncate(complete);
    lines(&data).into_iter().map(<[u8]>::to_vec).collect()
}

/// Waits until the stock plugin holds `want.len()` records and the input
/// stored exactly that many; then checks each arrived exactly once, byte
/// for byte (in order when `ordered`).
fn assert_each_once(
    agg: &Dispatcher,
    want: &[&[u8]],
    ordered: bool,
    limit: Duration,
    more: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        let n = stock_lines(agg).len();
        if n >= want.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stock plugin has {n} of {} records\n{}",
            want.len(),
            more()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let input = agg.input_state("nats");
    assert_eq!(
        input.get("records") as usize,
        want.len(),
        "records the consumer's input stored (each once)\n{}",
        more()
    );
    let got = stock_lines(agg);
    assert_eq!(got.len(), want.len(), "records at the stock plugin");
    if ordered {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        assert!(first.is_none(), "first difference at record {first:?}");
    } else {
        let mut a: Vec<&[u8]> = got.iter().map(|v| &v[..]).collect();
        let mut b = want.to_vec();
        a.sort_unstable();
        b.sort_unstable();
        assert!(a == b, "the same records, each once");
    }
}

fn stop(mut c: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = c.wait();
}

fn kill9(c: &mut Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

/// Records stored in the stream so far (from the monitoring port).
fn stream_messages(server: &Server) -> u64 {
    let Some((200, body)) = http_status(server.http, "/jsz?accounts=true&streams=true") else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .filter(|s| s["name"] == "AUDIT")
        .filter_map(|s| s["state"]["messages"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Publisher flags for the tests that kill something mid-stream: small
/// messages, so there are many and "mid-stream" is a while.
const SMALL: &[&str] = &["--records-per-message", "3"];

/// Stops the consumer and checks from its last words that it fed `want`
/// records from `messages` stream messages and left none out as stored
/// from another message: each record is in the stream once.
fn assert_stream_holds_each_once(consumer: Child, agg: &Dispatcher, want: usize, messages: u64) {
    stop(consumer);
    let log = log_of(agg, "consume.log");
    assert!(
        log.contains(&format!("fed {want} records of {messages} messages;")),
        "{log}"
    );
    assert!(
        log.contains("0 records left out (stored from another message)"),
        "{log}"
    );
}

#[test]
fn publish_to_jetstream_and_consume_into_a_stock_plugin_each_record_once() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "");
    let servers = vec![server.url()];
    create_stream(&servers, &[]);
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &[]);
    let mut d = sending_host();
    let publisher = start_publisher(&d, &servers, &[]);
    let data = sample();
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    assert_each_once(&agg, &want, true, Duration::from_secs(120), &|| {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log")
        )
    });
    // Many records per message in the stream; audispd has every one acked.
    let messages = stream_messages(&server);
    assert!(
        messages > 0 && messages < want.len() as u64 / 10,
        "{messages} messages for {} records",
        want.len()
    );
    let p = d.plugin_state("nats");
    assert_eq!(
        p.get("acked") as usize,
        want.len(),
        "acknowledged to audispd"
    );
    stop(publisher);
    stop(consumer);
    let log = log_of(&agg, "consume.log");
    assert!(
        log.contains(&format!(
            "fed {} records of {messages} messages; 0 duplicates, 0 skipped",
            want.len(),
        )),
        "{log}"
    );
}

#[test]
fn kill9_of_nats_server_mid_stream_and_restart_loses_and_duplicates_nothing() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = single(tmp.path(), "");
    let servers = vec![server.url()];
    create_stream(&servers, &[]);
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &[]);
    let mut d = sending_host();
    let publisher = start_publisher(&d, &servers, SMALL);
    let data = sample_copies(3);
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    wait_until(Duration::from_secs(60), "records in the stream", || {
        stream_messages(&server) > 700
    });
    server.kill9();
    let before = stock_lines(&agg).len();
    assert!(
        before < want.len(),
        "killed mid-stream ({before} records through)"
    );
    // Publishing waits meanwhile (nothing acknowledged without a PubAck).
    std::thread::sleep(Duration::from_millis(500));
    server.spawn();
    server.wait_healthy("/healthz?js-enabled-only=true");
    assert_each_once(&agg, &want, false, Duration::from_secs(120), &|| {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}\n--- server ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log"),
            server.log()
        )
    });
    // The publisher's resends (the same messages) were recognised.
    let messages = stream_messages(&server);
    stop(publisher);
    assert_stream_holds_each_once(consumer, &agg, want.len(), messages);
}

#[test]
fn kill9_of_publisher_and_of_consumer_mid_stream_loses_and_duplicates_nothing() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "");
    let servers = vec![server.url()];
    create_stream(&servers, &[]);
    let agg = aggregating_host();
    let mut consumer = start_consumer(&agg, &servers, &[]);
    let mut d = sending_host();
    let mut publisher = start_publisher(&d, &servers, SMALL);
    let data = sample_copies(3);
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    wait_until(Duration::from_secs(60), "records in the stream", || {
        stream_messages(&server) > 700
    });
    kill9(&mut publisher);
    let stored = stream_messages(&server);
    assert!(
        stored < want.len() as u64 / 3,
        "publisher killed mid-stream ({stored} messages stored)"
    );
    publisher = start_publisher(&d, &servers, SMALL);
    wait_until(Duration::from_secs(60), "records at the aggregator", || {
        stock_lines(&agg).len() > 3000
    });
    kill9(&mut consumer);
    let fed = stock_lines(&agg).len();
    assert!(
        fed < want.len(),
        "consumer killed mid-stream ({fed} records through)"
    );
    consumer = start_consumer(&agg, &servers, &[]);
    assert_each_once(&agg, &want, false, Duration::from_secs(120), &|| {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log")
        )
    });
    stop(publisher);
    stop(consumer);
}

#[test]
fn three_node_cluster_r3_stream_survives_the_leader_killed_mid_stream() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<String> = (0..3).map(|_| free_port()).map(|p| p.to_string()).collect();
    let route_list: Vec<String> = routes
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    let mut nodes: Vec<Server> = (0..3)
        .map(|i| {
            Server::start_on(
                tmp.path(),
                &format!("n{}", i + 1),
                ports[i],
                &format!(
                    "cluster {{ name: audit\n listen: 127.0.0.1:{}\n routes: [{}] }}",
                    routes[i],
                    route_list.join(", ")
                ),
            )
        })
        .collect();
    for n in &nodes {
        n.wait_healthy("/healthz");
    }
    let servers: Vec<String> = nodes.iter().map(Server::url).collect();
    create_stream(&servers, &["--replicas", "3"]);
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &[]);
    let mut d = sending_host();
    let publisher = start_publisher(&d, &servers, SMALL);
    let data = sample_copies(3);
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    wait_until(Duration::from_secs(60), "records in the stream", || {
        stream_messages(&nodes[0]) > 700
    });
    // The stream's leader, as the cluster reports it.
    let leader = {
        let (_, body) = http_status(nodes[0].http, "/jsz?accounts=true&streams=true").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["account_details"][0]["stream_detail"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "AUDIT"))
            .and_then(|s| s["cluster"]["leader"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no stream leader in {body}"))
    };
    let at = nodes.iter().position(|n| n.name == leader).unwrap();
    nodes[at].kill9();
    let alive = (at + 1) % 3;
    let stored = stream_messages(&nodes[alive]);
    assert!(
        stored < want.len() as u64 / 3,
        "leader killed mid-stream ({stored} messages stored)"
    );
    assert_each_once(&agg, &want, false, Duration::from_secs(180), &|| {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log")
        )
    });
    // Stored once by the surviving replicas.
    let messages = stream_messages(&nodes[alive]);
    stop(publisher);
    assert_stream_holds_each_once(consumer, &agg, want.len(), messages);
}

/// A bare NATS core-protocol client: what a stray client may put on the
/// stream, and JetStream API requests the tool does not make.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("INFO"), "{line}");
        let mut w = s;
        write!(
            w,
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true}}\r\n"
        )
        .unwrap();
        Raw { r, w }
    }

    /// Publishes `payload` on `subject` (with `headers`, if any; replies to
    /// `reply`, if given), and waits until the server has read it.
    fn publish(&mut self, subject: &str, reply: &str, headers: &[(&str, &str)], payload: &[u8]) {
        self.send(subject, reply, headers, payload);
        self.w.write_all(b"PING\r\n").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            assert!(!line.starts_with("-ERR"), "{line}");
            if line.starts_with("PONG") {
                return;
            }
        }
    }

    /// Writes a `PUB` (or `HPUB`) of `payload` on `subject`.
    fn send(&mut self, subject: &str, reply: &str, headers: &[(&str, &str)], payload: &[u8]) {
        if headers.is_empty() {
            write!(self.w, "PUB {subject} {reply} {}\r\n", payload.len()).unwrap();
        } else {
            let mut h = String::from("NATS/1.0\r\n");
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str("\r\n");
            let total = h.len() + payload.len();
            write!(self.w, "HPUB {subject} {reply} {} {total}\r\n{h}", h.len()).unwrap();
        }
        self.w.write_all(payload).unwrap();
        self.w.write_all(b"\r\n").unwrap();
    }

    /// A JetStream API request: its answer. (No PING: the answer may come
    /// before the PONG would.)
    fn request(&mut self, subject: &str, payload: &[u8]) -> serde_json::Value {
        write!(self.w, "SUB _INBOX.raw 1\r\n").unwrap();
        self.send(subject, "_INBOX.raw", &[], payload);
        let mut line = String::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if let Some(rest) = line.strip_prefix("MSG _INBOX.raw 1 ") {
                let n: usize = rest.trim().parse().unwrap();
                let mut body = vec![0u8; n + 2];
                self.r.read_exact(&mut body).unwrap();
                return serde_json::from_slice(&body[..n]).unwrap();
            }
            assert!(!line.starts_with("-ERR"), "{line}");
        }
    }
}

/// Publishes `payload` on `subject` with the core protocol (no id, no
/// PubAck: anything a stray client may put on the stream).
fn raw_publish(port: u16, subject: &str, headers: &[(&str, &str)], payload: &[u8]) {
    Raw::connect(port).publish(subject, "", headers, payload);
}

/// A record not in the sample, as an older publisher sent it.
const OLD_STYLE: &[u8] =
    b"type=USER msg=audit(1700000099.000:999999): pid=1 uid=0 auid=0 ses=1 msg='from an older publisher'";

#[test]
fn a_message_that_is_not_an_audit_record_is_counted_and_skipped() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "");
    let servers = vec![server.url()];
    create_stream(&servers, &[]);
    // Before, between and after the records: none may stall the consumer.
    raw_publish(server.port, "audit.stray.X", &[], b"hello, not a record");
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &[]);
    let mut d = sending_host();
    let publisher = start_publisher(&d, &servers, &["--format", "text"]);
    let data = sample();
    let mut want = lines(&data);
    // A record as older publishers sent it (no headers) is fed too.
    raw_publish(server.port, "audit.old.USER", &[], OLD_STYLE);
    want.push(OLD_STYLE);
    let _stdin = keep_feeding(&mut d, &data);
    raw_publish(server.port, "audit.stray.Y", &[], b"{\"json\": true}");
    // Records whose headers do not name each one.
    let two = [OLD_STYLE, b"\n", OLD_STYLE].concat();
    let places = [("Audisp-Origin", "abc"), ("Audisp-Seqs", "1")];
    raw_publish(server.port, "audit.stray.W", &places, &two);
    assert_each_once(&agg, &want, false, Duration::from_secs(120), &|| {
        log_of(&agg, "consume.log")
    });
    raw_publish(server.port, "audit.stray.Z", &[], b"");
    let log_has =
        |n: u64| log_of(&agg, "consume.log").contains(&format!("skipped, the {n}th so far"));
    wait_until(Duration::from_secs(30), "four skipped messages", || {
        log_has(4)
    });
    stop(publisher);
    stop(consumer);
    let log = log_of(&agg, "consume.log");
    assert!(log.contains("is not an audit record"), "{log}");
    assert!(log.contains("it is JSON"), "{log}");
    assert!(log.contains("it is empty"), "{log}");
    assert!(
        log.contains("does not list one journal place per record"),
        "{log}"
    );
    let messages = stream_messages(&server) - 4;
    assert!(
        log.contains(&format!(
            "fed {} records of {messages} messages; 0 duplicates, 4 skipped",
            want.len(),
        )),
        "{log}"
    );
}

/// Writes a secret file as the programs want it: root's, mode 0600.
fn secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn an_unauthorized_client_is_refused_and_nothing_is_lost_meanwhile() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        support::skip("needs root (secret files must be root's)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "authorization { token: \"right-token\" }");
    let servers = vec![server.url()];
    let right = tmp.path().join("right.token");
    let wrong = tmp.path().join("wrong.token");
    secret(&right, "right-token\n");
    secret(&wrong, "wrong-token\n");
    let url = server.url();
    let (ok, out) = nats_tool(&[
        "create-stream",
        "--no-config",
        "--server",
        &url,
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.to_lowercase().contains("authorization violation"),
        "{out}"
    );
    // A secret others may read is refused before any connection.
    let loose = tmp.path().join("loose.token");
    std::fs::write(&loose, "right-token\n").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = nats_tool(&[
        "create-stream",
        "--no-config",
        "--server",
        &url,
        "--token-file",
        loose.to_str().unwrap(),
    ]);
    assert!(
        !ok && out.contains("no access for group or others"),
        "{out}"
    );
    create_stream(&servers, &["--token-file", right.to_str().unwrap()]);

    let mut d = sending_host();
    let data = sample();
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    let mut refused = start_publisher(&d, &servers, &["--token-file", wrong.to_str().unwrap()]);
    wait_until(Duration::from_secs(30), "the refusal in the log", || {
        log_of(&d, "publish.log")
            .to_lowercase()
            .contains("authorization violation")
    });
    assert_eq!(stream_messages(&server), 0, "nothing stored while refused");
    kill9(&mut refused);
    let publisher = start_publisher(&d, &servers, &["--token-file", right.to_str().unwrap()]);
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &["--token-file", right.to_str().unwrap()]);
    assert_each_once(&agg, &want, true, Duration::from_secs(120), &|| {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log")
        )
    });
    stop(publisher);
    stop(consumer);
}

/// The shipped option file passes `--check-config` of both sides as
/// shipped and with every setting uncommented, and shows a key for every
/// flag; a mistake is reported at its line.
#[test]
fn shipped_option_file_checks_and_covers_every_flag() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/audisp-nats.toml"),
    )
    .unwrap();
    let mut uncommented = String::new();
    let mut settings = Vec::new();
    for line in shipped.lines() {
        let setting = line
            .strip_prefix('#')
            .unwrap_or(line)
            .split_once(" = ")
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if let Some(k) = setting {
            settings.push(k.to_string());
        }
        uncommented.push_str(if setting.is_some() {
            line.trim_start_matches('#')
        } else {
            line
        });
        uncommented.push('\n');
    }
    // Every flag of publish and consume has its key (create-stream's are
    // flags only: a stream is made once).
    let (_, help) = nats_tool(&["--help"]);
    let usage: String = help
        .lines()
        .take_while(|l| !l.contains("create-stream:"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut flags: Vec<String> = usage
        .split("--")
        .skip(1)
        .map(|s| {
            s.split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .next()
                .unwrap_or("")
                .to_string()
        })
        .filter(|f| !matches!(f.as_str(), "config" | "no-config" | "check-config" | ""))
        .collect();
    flags.sort();
    flags.dedup();
    assert!(flags.len() >= 25, "{flags:?}");
    for f in flags {
        let f = f.strip_prefix("tls-").unwrap_or(&f);
        let f = f.strip_prefix("on-").unwrap_or(f);
        let key = match f {
            "server" => "servers".to_string(),
            other => other.replace('-', "_"),
        };
        assert!(
            settings.contains(&key),
            "the file does not show {key}: {settings:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for (variant, body) in [("shipped", &shipped), ("uncommented", &uncommented)] {
        let file = dir.path().join(format!("{variant}.toml"));
        std::fs::write(&file, body).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        for sub in ["publish", "consume"] {
            let (ok, out) = nats_tool(&[sub, "--check-config", "--config", file.to_str().unwrap()]);
            assert!(
                ok && out == "audisp-nats: configuration ok\n",
                "{variant} {sub}: {out}"
            );
        }
    }
    // Mistakes, each at its line, before anything starts.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "servers = [\"http://x:1\"]\n[publish]\nsubject = \"audit.{user}\"\n[consume]\nbatch = \"many\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = nats_tool(&[
        "consume",
        "--check-config",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok, "{out}");
    for line in [1, 3, 5] {
        assert!(
            out.contains(&format!("{}:{line}: ", bad.display())),
            "line {line}: {out}"
        );
    }
    let (ok, out) = nats_tool(&[
        "consume",
        "--no-config",
        "--server",
        "a:1",
        "--subject",
        "x",
    ]);
    assert!(
        !ok && out.contains("--subject is an option of `audisp-nats publish`"),
        "{out}"
    );
}

/// A sending host whose plugins.d file configures the actions `names`
/// (each `run = "log"`).
fn sending_host_with_actions(names: &[&str]) -> Dispatcher {
    let mut d = Dispatcher::new("[stats]\ninterval = \"0\"\n");
    let mut body = "socket = \"{dir}/run/nats.sock\"\nformat = \"native\"\n[restart]\ninitial = \"20ms\"\nmax = \"200ms\"\n".to_string();
    for n in names {
        body.push_str(&format!("[actions.{n}]\nrun = \"log\"\n"));
    }
    d.write_plugin("nats", &body);
    d.start(Stdio::piped()).unwrap();
    d
}

#[test]
fn a_full_stream_and_no_stream_run_their_failure_actions_and_acknowledge_nothing_unstored() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "");
    let servers = vec![server.url()];
    // Room for a few hundred records; discard new: the stream refuses more.
    create_stream(&servers, &["--max-bytes", "200K"]);
    let mut d = sending_host_with_actions(&["stream-full"]);
    // One record per message: messages stored and records acknowledged
    // compare.
    let publisher = start_publisher(
        &d,
        &servers,
        &[
            "--on-stream-full",
            "dispatcher:stream-full",
            "--records-per-message",
            "1",
        ],
    );
    let data = sample();
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    wait_until(Duration::from_secs(60), "the stream-full action", || {
        log_of(&d, "publish.log").contains("action \"stream-full\": Done")
    });
    d.wait_log("stream-full", Duration::from_secs(10));
    let log = log_of(&d, "publish.log");
    assert!(log.contains("maximum bytes exceeded"), "{log}");
    // Nothing the stream did not store was acknowledged to audispd (a batch
    // only when all of it is stored): the rest waits in its journal.
    let stored = stream_messages(&server);
    assert!(stored > 0 && stored < want.len() as u64, "{stored} stored");
    let acked = d.plugin_state("nats").get("acked");
    assert!(acked <= stored, "{acked} acknowledged, {stored} stored");
    stop(publisher);

    // A subject no stream captures: nobody answers, the refused action runs.
    let mut d2 = sending_host_with_actions(&["refused"]);
    let publisher = start_publisher(
        &d2,
        &servers,
        &[
            "--subject",
            "elsewhere.{type}",
            "--on-refused",
            "dispatcher:refused",
        ],
    );
    let _stdin2 = keep_feeding(&mut d2, &data);
    wait_until(Duration::from_secs(60), "the refused action", || {
        log_of(&d2, "publish.log").contains("action \"refused\": Done")
    });
    assert!(log_of(&d2, "publish.log").contains("no responders"));
    assert_eq!(d2.plugin_state("nats").get("acked"), 0);
    stop(publisher);
}

/// A CA, a server certificate for `localhost` and a client certificate,
/// written to `dir`; returns (ca, server cert, server key, client cert,
/// client key).
fn make_pki(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let k = KeyPair::generate().unwrap();
        let c = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&k, &issuer)
            .unwrap();
        (c.pem(), k.serialize_pem())
    };
    let paths = [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ]
    .map(|n| dir.join(n));
    let (sc, sk) = leaf("localhost");
    let (cc, ck) = leaf("publisher.test");
    std::fs::write(&paths[0], ca_cert.pem()).unwrap();
    std::fs::write(&paths[1], sc).unwrap();
    secret(&paths[2], &sk);
    std::fs::write(&paths[3], cc).unwrap();
    secret(&paths[4], &ck);
    paths
}

#[test]
fn tls_with_client_certificates_delivers_every_record_once_and_refuses_a_client_without_one() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        support::skip("needs root (key files must be root's)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let [ca, cert, key, ccert, ckey] = make_pki(tmp.path());
    let server = single(
        tmp.path(),
        &format!(
            "tls {{ cert_file: \"{}\"\n key_file: \"{}\"\n ca_file: \"{}\"\n verify: true }}",
            cert.display(),
            key.display(),
            ca.display()
        ),
    );
    let servers = vec![format!("nats://localhost:{}", server.port)];
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (ca, ccert, ckey) = (s(&ca), s(&ccert), s(&ckey));
    let tls = ["--tls-ca", &ca, "--tls-cert", &ccert, "--tls-key", &ckey];
    // Without a client certificate the server refuses the handshake.
    let (ok, out) = nats_tool(&[
        "create-stream",
        "--no-config",
        "--server",
        &servers[0],
        "--tls-ca",
        &ca,
    ]);
    assert!(!ok, "{out}");
    create_stream(&servers, &tls);
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &tls);
    let mut d = sending_host();
    let publisher = start_publisher(&d, &servers, &tls);
    let data = sample();
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    assert_each_once(&agg, &want, true, Duration::from_secs(120), &|| {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}\n--- server ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log"),
            server.log()
        )
    });
    stop(publisher);
    stop(consumer);
}

#[test]
fn events_mode_publishes_one_message_per_event_and_every_record_arrives_once() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "");
    let servers = vec![server.url()];
    create_stream(&servers, &[]);
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &[]);
    let mut d = sending_host();
    let publisher = start_publisher(&d, &servers, &["--events"]);
    let data = sample();
    let is_eoe = |l: &[u8]| l.starts_with(b"type=EOE ");
    // audispd's events mode leaves out EOE records (they only close an
    // event): every other record must arrive once.
    let mut want: Vec<&[u8]> = lines(&data).into_iter().filter(|l| !is_eoe(l)).collect();
    let _stdin = keep_feeding(&mut d, &data);
    let more = || {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log")
        )
    };
    wait_until(Duration::from_secs(120), "every record but EOEs", || {
        stock_lines(&agg).iter().filter(|l| !is_eoe(l)).count() >= want.len()
    });
    // Every message was fed by now (each holds records other than EOE):
    // the plugin gets what the input stored, the last EOEs maybe later.
    let stored = agg.input_state("nats").get("records") as usize;
    wait_until(
        Duration::from_secs(30),
        "the input's records at the plugin",
        || stock_lines(&agg).len() >= stored,
    );
    let got = stock_lines(&agg);
    let mut records: Vec<&[u8]> = got.iter().map(|l| &l[..]).filter(|l| !is_eoe(l)).collect();
    records.sort_unstable();
    want.sort_unstable();
    assert!(records == want, "every record but EOEs, once\n{}", more());
    // The sample's lines are all distinct: none came twice.
    let mut all: Vec<&[u8]> = got.iter().map(|l| &l[..]).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), got.len(), "no record twice");
    assert_eq!(
        stored,
        got.len(),
        "what the input stored is what the plugin got"
    );
    let messages = stream_messages(&server);
    assert!(
        messages > 0 && messages < want.len() as u64 / 2,
        "{messages} messages for {} records",
        want.len()
    );
    stop(publisher);
    stop(consumer);
    let log = log_of(&agg, "consume.log");
    assert!(
        log.contains(&format!("of {messages} messages; 0 duplicates, 0 skipped")),
        "{log}"
    );
}

#[test]
fn a_publisher_restarted_with_other_message_sizes_sends_again_cut_differently_and_each_record_is_stored_once(
) {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "");
    let servers = vec![server.url()];
    // Room for part of the sample: the stream stores the first messages of
    // a batch and refuses the rest, so audispd keeps the whole batch.
    create_stream(&servers, &["--max-bytes", "200K"]);
    let agg = aggregating_host();
    let consumer = start_consumer(&agg, &servers, &[]);
    let mut d = sending_host();
    let mut publisher = start_publisher(&d, &servers, &["--records-per-message", "50"]);
    let data = sample();
    let want = lines(&data);
    let _stdin = keep_feeding(&mut d, &data);
    wait_until(Duration::from_secs(60), "the stream full", || {
        log_of(&d, "publish.log").contains("maximum bytes exceeded")
    });
    // Records stored and fed that audispd has not had acknowledged: the
    // restarted publisher sends them again.
    let acked = d.plugin_state("nats").get("acked") as usize;
    wait_until(Duration::from_secs(30), "stored records fed", || {
        stock_lines(&agg).len() > acked
    });
    kill9(&mut publisher);
    // Room for everything (a JetStream API request: the tool only creates).
    let mut raw = Raw::connect(server.port);
    let info = raw.request("$JS.API.STREAM.INFO.AUDIT", b"");
    let mut config = info["config"].clone();
    config["max_bytes"] = serde_json::json!(-1);
    let updated = raw.request("$JS.API.STREAM.UPDATE.AUDIT", config.to_string().as_bytes());
    assert!(updated.get("error").is_none(), "{updated}");
    let publisher = start_publisher(&d, &servers, &["--records-per-message", "7"]);
    assert_each_once(&agg, &want, false, Duration::from_secs(120), &|| {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&agg, "consume.log")
        )
    });
    stop(publisher);
    stop(consumer);
    // Records were in the stream twice, in messages cut differently; the
    // consumer left the second ones out.
    let log = log_of(&agg, "consume.log");
    let left_out: u64 = log
        .lines()
        .filter_map(|l| l.split(" duplicates, ").nth(1))
        .filter_map(|l| l.split(", ").nth(1))
        .filter_map(|l| l.split(' ').next())
        .filter_map(|n| n.parse().ok())
        .next_back()
        .unwrap_or(0);
    assert!(left_out > 0, "no record left out\n{log}");
}

/// One host that both publishes and consumes the same stream, set up as
/// the shipped files do (audispd with the publishing plugin, the consumer
/// feeding the same audispd): each record is published once. The records
/// the consumer brings back come from a relayed input, which the publisher
/// leaves out; published again they would come back again, for ever.
#[test]
fn a_host_that_publishes_and_consumes_one_stream_does_not_loop() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = single(tmp.path(), "");
    let servers = vec![server.url()];
    create_stream(&servers, &[]);
    let mut d = sending_host();
    // One record per message: the stream's message count is its records.
    let publisher = start_publisher(&d, &servers, &["--records-per-message", "1"]);
    let consumer = start_consumer(&d, &servers, &[]);
    let data = sample();
    let want = lines(&data).len() as u64;
    let _stdin = keep_feeding(&mut d, &data);
    let logs = || {
        format!(
            "--- publish ---\n{}\n--- consume ---\n{}",
            log_of(&d, "publish.log"),
            log_of(&d, "consume.log")
        )
    };
    // Every record came back through the consumer, and the publisher has
    // nothing left to take: had it been given the returning records, it
    // would have published them before its queue emptied.
    wait_until(
        Duration::from_secs(120),
        "the records back through the consumer, the publisher's queue empty",
        || {
            let report = d.state();
            let back = state_line(&report, "input", "nats").map_or(0, |i| i.get("records"));
            let queued = state_line(&report, "plugin", "nats").map_or(1, |p| p.get("queued"));
            back >= want && queued == 0
        },
    );
    assert_eq!(d.input_state("nats").get("records"), want, "{}", logs());
    assert_eq!(d.plugin_state("nats").get("acked"), want, "{}", logs());
    assert_eq!(stream_messages(&server), want, "{}", logs());
    stop(publisher);
    stop(consumer);
}
