//! What the framing tests share: sample records and frames, stream
//! builders, and decoding a stream every way it can be split.

use super::binary::TYPE_UNPARSED;
use super::*;
use crate::record::MAX_RECORD_LEN;

/// An item with its borrow ended, for comparing outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Out {
    Rec(Vec<u8>, Option<u32>),
    Bad(Malformed),
}

pub(super) fn own(item: Item<'_>) -> Out {
    match item {
        Item::Record { text, type_hint } => {
            assert!(text.len() <= MAX_RECORD_LEN);
            Out::Rec(text.to_vec(), type_hint)
        }
        Item::Malformed(m) => Out::Bad(m),
    }
}

/// Decodes `chunks` as one stream, then finishes it.
pub(super) fn decode(format: InputFormat, chunks: &[&[u8]]) -> (Vec<Out>, Option<BinaryFraming>) {
    let mut d = Decoder::new(format);
    let mut outs = Vec::new();
    for c in chunks {
        d.feed(c, &mut |i| outs.push(own(i)));
    }
    d.finish(&mut |i| outs.push(own(i)));
    (outs, d.detected_framing())
}

pub(super) fn one_shot(format: InputFormat, input: &[u8]) -> Vec<Out> {
    decode(format, &[input]).0
}

/// Decodes `input` split at every byte offset, byte by byte and in random
/// chunkings, asserting every way gives the one-shot output; returns it.
pub(super) fn every_split(format: InputFormat, input: &[u8]) -> Vec<Out> {
    let (whole, framing) = decode(format, &[input]);
    for at in 0..=input.len() {
        let (split, f) = decode(format, &[&input[..at], &input[at..]]);
        assert_eq!(split, whole, "split at {at}");
        assert_eq!(f, framing, "split at {at}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode(format, &bytes).0, whole, "byte by byte");
    random_chunkings(format, input, &whole, 30);
    whole
}

/// Feeds `input` as one chunk and asserts it yields one record, lent from
/// the chunk rather than copied.
pub(super) fn assert_one_record_lent_from_the_chunk(format: InputFormat, input: &[u8]) {
    let range = input.as_ptr_range();
    let mut d = Decoder::new(format);
    let mut seen = 0;
    d.feed(input, &mut |item| {
        if let Item::Record { text, .. } = item {
            assert!(range.contains(&text.as_ptr()));
            seen += 1;
        }
    });
    assert_eq!(seen, 1);
}

/// A small deterministic PRNG (xorshift64*).
pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(super) fn random_chunkings(format: InputFormat, input: &[u8], whole: &[Out], rounds: u64) {
    for seed in 1..=rounds {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut chunks = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let max = [3, 17, 600, 9000, 70000][rng.below(5)];
            let n = (rng.below(max) + 1).min(rest.len());
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(decode(format, &chunks).0, whole, "chunking seed {seed}");
    }
}

pub(super) fn rec(text: &[u8], hint: Option<u32>) -> Out {
    Out::Rec(text.to_vec(), hint)
}

pub(super) fn records(outs: &[Out]) -> Vec<Vec<u8>> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Rec(t, _) => Some(t.clone()),
            Out::Bad(_) => None,
        })
        .collect()
}

pub(super) fn bads(outs: &[Out]) -> Vec<Malformed> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Bad(m) => Some(m.clone()),
            Out::Rec(..) => None,
        })
        .collect()
}

pub(super) const STRING: InputFormat = InputFormat::String;
pub(super) const EXACT: InputFormat = InputFormat::Binary(BinaryFraming::Exact);
pub(super) const PADDED: InputFormat = InputFormat::Binary(BinaryFraming::Padded);
pub(super) const AUTO: InputFormat = InputFormat::Binary(BinaryFraming::Auto);

pub(super) const SYSCALL_V1: &[u8] = b"type=SYSCALL msg=audit(1721000000.123:42): arch=c000003e syscall=257 \
success=yes exit=3 a0=ffffff9c a1=7ffd2b1c a2=0 a3=0 items=1 ppid=1001 pid=1234 auid=1000 uid=0 \
gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm=\"cat\" exe=\"/usr/bin/cat\" \
key=\"shadow\"\x1dARCH=x86_64 SYSCALL=openat AUID=\"alice\" UID=\"root\" GID=\"root\" EUID=\"root\"";
pub(super) const PATH_V1: &[u8] =
    b"type=PATH msg=audit(1721000000.123:42): item=0 name=\"/etc/shadow\" \
inode=1311 dev=08:01 mode=0100640 ouid=0 ogid=42 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 \
cap_fe=0 cap_fver=0 cap_frootid=0\x1dOUID=\"root\" OGID=\"shadow\"";
pub(super) const LOGIN_V1: &[u8] =
    b"node=web-01 type=USER_LOGIN msg=audit(1721000001.007:99): pid=812 \
uid=0 auid=1000 ses=4 msg='op=login id=1000 exe=\"/usr/sbin/sshd\" hostname=? addr=10.0.0.5 \
terminal=ssh res=success'\x1dUID=\"root\" AUID=\"alice\" ID=\"alice\"";
pub(super) const PROCTITLE_V0: &[u8] =
    b"audit(1721000000.123:42): proctitle=636174002F6574632F736861646F77";
pub(super) const EOE_V0: &[u8] = b"audit(1721000000.123:42): ";
pub(super) const AVC_V0: &[u8] = b"audit(1721000003.500:77): avc:  denied  { read } for  pid=2001 \
comm=\"httpd\"\nname=\"index.html\" dev=\"sda1\" ino=4242\n";

/// A V1 record of exactly `len` bytes (at least 60).
pub(super) fn v1_record(serial: u64, len: usize) -> Vec<u8> {
    let mut r = format!("type=USER msg=audit(1721000100.250:{serial}): pid=77 uid=0 msg='data=")
        .into_bytes();
    assert!(r.len() + 1 < len);
    r.resize(len - 1, b'x');
    r.push(b'\'');
    r
}

pub(super) fn header(ver: u32, hlen: u32, rtype: u32, size: u32) -> Vec<u8> {
    [ver, hlen, rtype, size]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect()
}

/// An exact frame (auditd >= 4.1.1).
pub(super) fn frame(ver: u32, rtype: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = header(ver, 16, rtype, payload.len() as u32);
    f.extend_from_slice(payload);
    f
}

/// A padded frame (auditd <= 4.1.0) whose padding is `fill` repeated.
pub(super) fn padded(ver: u32, rtype: u32, payload: &[u8], fill: &[u8]) -> Vec<u8> {
    let mut f = frame(ver, rtype, payload);
    while f.len() < PADDED_FRAME_LEN {
        let n = fill.len().min(PADDED_FRAME_LEN - f.len());
        f.extend_from_slice(&fill[..n]);
    }
    f
}

/// The test stream's frames: (ver, type, payload) and the canonical text.
pub(super) fn sample() -> Vec<(u32, u32, Vec<u8>, Out)> {
    let mut big = v1_record(500, MAX_PAYLOAD - 1);
    big.push(0);
    vec![
        (1, 1300, SYSCALL_V1.to_vec(), rec(SYSCALL_V1, Some(1300))),
        (1, 1302, PATH_V1.to_vec(), rec(PATH_V1, Some(1302))),
        (
            0,
            1327,
            PROCTITLE_V0.to_vec(),
            rec(
                b"type=PROCTITLE msg=audit(1721000000.123:42): proctitle=636174002F6574632F736861646F77",
                Some(1327),
            ),
        ),
        (
            0,
            1320,
            EOE_V0.to_vec(),
            rec(b"type=EOE msg=audit(1721000000.123:42): ", Some(1320)),
        ),
        (
            0,
            1400,
            AVC_V0.to_vec(),
            rec(
                b"type=AVC msg=audit(1721000003.500:77): avc:  denied  { read } for  pid=2001 \
comm=\"httpd\" name=\"index.html\" dev=\"sda1\" ino=4242 ",
                Some(1400),
            ),
        ),
        (
            0,
            1999,
            b"audit(1721000004.000:78): op=test\nres=1".to_vec(),
            rec(b"type=UNKNOWN[1999] msg=audit(1721000004.000:78): op=test res=1", Some(1999)),
        ),
        (1, 1112, LOGIN_V1.to_vec(), rec(LOGIN_V1, Some(1112))),
        (
            1,
            TYPE_UNPARSED,
            b"node=remote type=USER_CMD msg=audit(1721000005.001:80): cmd=6C73\ncwd=\"/\"".to_vec(),
            rec(b"node=remote type=USER_CMD msg=audit(1721000005.001:80): cmd=6C73 cwd=\"/\"", None),
        ),
        (1, 1005, big.clone(), rec(&big[..MAX_PAYLOAD - 1], Some(1005))),
        (1, 1005, v1_record(501, 300), rec(&v1_record(501, 300), Some(1005))),
    ]
}

pub(super) fn exact_stream(frames: &[(u32, u32, Vec<u8>, Out)]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|(v, t, p, _)| frame(*v, *t, p))
        .collect()
}

pub(super) fn padded_stream(frames: &[(u32, u32, Vec<u8>, Out)], fill: &[u8]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|(v, t, p, _)| padded(*v, *t, p, fill))
        .collect()
}

pub(super) fn expected(frames: &[(u32, u32, Vec<u8>, Out)]) -> Vec<Out> {
    frames.iter().map(|f| f.3.clone()).collect()
}

/// Stale heap as auditd <= 4.1.0 leaves it: bits of old records.
pub(super) const STALE: &[u8] = b"ppid=1 pid=4321 auid=4294967295 uid=0 gid=0 comm=\"systemd\" exe=\"/usr/lib/systemd/systemd\" ";

/// A fake frame: a valid header and a record that was never sent.
pub(super) fn fake_frame(serial: u64, len: usize) -> Vec<u8> {
    frame(1, 1005, &v1_record(serial, len - HEADER_LEN))
}

/// and without records, and whole fake frames at every few bytes.
pub(super) fn adversarial_fill() -> Vec<u8> {
    let mut fill = Vec::new();
    fill.extend_from_slice(&fake_frame(900, 120));
    fill.extend_from_slice(&header(0, 16, 1300, 40));
    fill.extend_from_slice(b"audit(1721000000.000:901): fake");
    fill.extend_from_slice(&header(1, 16, 1005, 8970));
    fill.extend_from_slice(&fake_frame(902, 200));
    fill.extend_from_slice(STALE);
    fill
}
