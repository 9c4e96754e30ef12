//! Fuzzes one audisp-receive connection end to end
//! (`audisp::remote::server::serve_connection`): whatever a network client
//! sends (managed messages, ASCII lines, the fast-mode hello, heartbeats and
//! batches in any order), in arbitrary read sizes, against a real store in a
//! fresh directory (on /dev/shm when there is one: its fsyncs are cheap).
//!
//! Invariants checked:
//! * no panic (the fuzz build has overflow checks on);
//! * every reply is a well-formed message of a type the server may send,
//!   within its type's length limit, with nothing left over;
//! * fast-mode acknowledgements never go backwards and end at what the
//!   store holds for that sender;
//! * the store holds exactly the records the counters say were stored,
//!   each non-empty, at most `MAX_RECORD` bytes and one line (no `\n`): the
//!   log writes one record per line.
//!
//! Input layout: bytes 0..8 = seed of the read sizes, the rest = what the
//! client sends.

#![no_main]

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use audisp::journal::{Limits, ReadOutcome, Step};
use audisp::remote::server::{serve_connection, ServerConfig, Shared, Transport};
use audisp::remote::store::Store;
use audisp::remote::wire::{self, types, Header, HEADER_LEN, MAX_RECORD};
use libfuzzer_sys::fuzz_target;

/// The client: hands out the input in chunks, then end of stream; keeps
/// what the server writes.
struct Client {
    chunks: Vec<Vec<u8>>,
    next: usize,
    pos: usize,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(c) = self.chunks.get(self.next) else {
            return Ok(0);
        };
        let n = (c.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&c[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == c.len() {
            self.next += 1;
            self.pos = 0;
        }
        Ok(n)
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Client {}

fn chunks(input: &[u8], mut seed: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let max = [1, 16, 300, 70000][(seed % 4) as usize];
        let n = ((seed >> 8) as usize % max + 1).min(rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        if let Ok(d) = tempfile::tempdir_in("/dev/shm") {
            return d;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let seed = u64::from_le_bytes(data[..8].try_into().unwrap()) | 1;
    let dir = scratch();
    let limits = Limits {
        segment_size: 1 << 20,
        max_size: 64 << 20,
        memory: 1 << 20,
    };
    let store = Arc::new(Store::open(dir.path(), limits).expect("store"));
    let shared = Shared::new(
        store.clone(),
        ServerConfig {
            max_per_addr: 1,
            max_connections: 1,
            handshake_timeout: None,
            idle_timeout: None,
            space_left: 0,
            dir: dir.path().to_path_buf(),
        },
    );
    let out = Arc::new(Mutex::new(Vec::new()));
    let client = Client {
        chunks: chunks(&data[8..], seed),
        next: 0,
        pos: 0,
        out: out.clone(),
    };
    let peer: SocketAddr = "192.0.2.7:4242".parse().unwrap();
    serve_connection(Box::new(client), peer, &shared);

    // The replies.
    let out = out.lock().unwrap();
    let mut rest = &out[..];
    let mut fast_ack = 0u64;
    while !rest.is_empty() {
        assert!(rest.len() >= HEADER_LEN, "a torn reply: {rest:02x?}");
        let h = Header::parse(rest[..HEADER_LEN].try_into().unwrap()).expect("reply header");
        assert!(
            matches!(
                h.mtype,
                types::ACK
                    | types::DISKLOW
                    | types::DISKFULL
                    | types::DISKERROR
                    | types::FAST_OK
                    | types::FAST_ORIGINS
                    | types::FAST_ACK
            ),
            "reply type {:#x}",
            h.mtype
        );
        let end = HEADER_LEN + usize::from(h.len);
        assert!(rest.len() >= end, "a torn reply payload");
        if h.mtype == types::FAST_ACK {
            let v = wire::parse_u64(&rest[HEADER_LEN..end]).expect("FAST_ACK payload");
            assert!(v >= fast_ack, "FAST_ACK went back from {fast_ack} to {v}");
            fast_ack = v;
        }
        rest = &rest[end..];
    }

    // The store.
    let journal = store.journal();
    let mut reader = journal.reader(journal.start().max(1));
    let mut held = 0u64;
    loop {
        let got = reader
            .read(1 << 20, &mut |e| {
                held += 1;
                assert!(!e.text.is_empty(), "an empty record stored");
                assert!(
                    e.text.len() <= MAX_RECORD,
                    "a record of {} bytes",
                    e.text.len()
                );
                assert!(
                    !e.text.contains(&b'\n'),
                    "a record with a newline: {:?}",
                    e.text
                );
                Step::Next
            })
            .expect("reading the store back");
        match got {
            ReadOutcome::Entries(_) => {}
            ReadOutcome::CaughtUp => break,
            ReadOutcome::Lost { from, to, reason } => {
                panic!("store entries {from}..{to} lost: {reason:?}")
            }
        }
    }
    assert_eq!(held, shared.counters.stored.load(Ordering::Relaxed));
    if fast_ack > 0 {
        // The last FAST_ACK names the highest sequence number held from the
        // connection's fast sender: index 1, or 2 after stock records.
        assert!(
            (1..=2).any(|i| store.last_seq(i) == fast_ack),
            "last FAST_ACK {fast_ack}, held {} / {}",
            store.last_seq(1),
            store.last_seq(2)
        );
    }
});
