//! audispd's standard input as auditd ≤ 4.1.0 writes binary format to it:
//! one padded 8,986-byte frame per write on a socket whose buffer holds only
//! a few dozen. While frames keep coming, audispd holds its reads back and
//! hands several on together (`audisp::framing::coalesce`); every record
//! still arrives once and in order, the end of a burst is handed on as soon
//! as the input pauses (not at a later read or after a quiet second), and a
//! record written alone is not held at all.

mod support;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::dispatcher::{
    lines, sample, sink_plugin, texts, wait_sink, Dispatcher, MAIN_SMALL_JOURNAL,
};

/// How soon the last records of a burst must reach the plugin once the
/// writer is done: far more than a held batch waits
/// (`coalesce::HOLD_TIME`, 1 ms), far less than the quiet second after
/// which an idle reader looks at its input again.
const END_OF_BURST_LIMIT: Duration = Duration::from_millis(500);

/// How soon a record written alone must reach the plugin, as in
/// tests/real_auditd_dispatch.rs.
const LONE_RECORD_LIMIT: Duration = Duration::from_millis(50);

/// A frame as auditd ≤ 4.1.0 writes it: host-endian `{ver, hlen, type,
/// size}`, the record, then stale bytes up to 8,970 payload bytes.
fn padded_frame(rec: &[u8]) -> Vec<u8> {
    let name_start = rec.windows(5).position(|w| w == b"type=").expect("type=") + 5;
    let name_end = name_start
        + rec[name_start..]
            .iter()
            .position(|&b| b == b' ')
            .expect("a space after the type");
    let rtype = audisp::record_types::number(&rec[name_start..name_end]).unwrap_or(1);
    let mut f = Vec::with_capacity(audisp::framing::PADDED_FRAME_LEN);
    for w in [
        1u32,
        16,
        rtype,
        u32::try_from(rec.len()).expect("record length"),
    ] {
        f.extend_from_slice(&w.to_ne_bytes());
    }
    f.extend_from_slice(rec);
    f.resize(audisp::framing::PADDED_FRAME_LEN, 0xa5);
    f
}

/// Writes each record as its own padded frame, as auditd does.
fn write_frames(to: &mut UnixStream, recs: &[&[u8]]) {
    for rec in recs {
        to.write_all(&padded_frame(rec)).expect("write a frame");
    }
}

/// Waits until the sink has `n` records; returns their texts and how long
/// that took.
fn sink_reaches(d: &Dispatcher, n: usize) -> (Vec<Vec<u8>>, Duration) {
    let since = Instant::now();
    let out = wait_sink(&d.out("sink"), n, Duration::from_secs(60));
    let took = since.elapsed();
    (texts(&out).into_iter().map(<[u8]>::to_vec).collect(), took)
}

#[test]
fn padded_frames_written_one_by_one_arrive_once_in_order_and_no_burst_is_held_at_its_end() {
    let mut d = Dispatcher::new(&format!(
        "{MAIN_SMALL_JOURNAL}\n[input.stdin]\nformat = \"binary\"\nbinary_framing = \"padded\"\n"
    ));
    d.write_plugin("sink", &sink_plugin("sink", "", ""));
    let (mut auditd, theirs) = UnixStream::pair().expect("socketpair");
    d.start(Stdio::from(OwnedFd::from(theirs))).unwrap();
    let data = sample();
    let good = lines(&data);
    let mut sent: Vec<&[u8]> = Vec::new();

    // A long burst, as fast as the socket takes the frames: audispd's reads
    // are busy, several socket-fulls are held and handed on together.
    write_frames(&mut auditd, &good[..3000]);
    sent.extend_from_slice(&good[..3000]);
    let (got, took) = sink_reaches(&d, sent.len());
    assert!(
        got == sent,
        "every record of the burst once, in order\n{}",
        d.log_tail(40)
    );
    assert!(
        took < END_OF_BURST_LIMIT,
        "the end of a long burst reached the plugin {took:?} after the last write (limit {END_OF_BURST_LIMIT:?})"
    );

    // Short bursts after quiet spells (longer than a busy input's 2 ms gap
    // between reads): 30 frames, about a socket-full and a half, whose last
    // read is held (nothing bounds it yet) until the input pauses.
    for burst in good[3000..3300].chunks(30) {
        std::thread::sleep(Duration::from_millis(20));
        write_frames(&mut auditd, burst);
        sent.extend_from_slice(burst);
        let (got, took) = sink_reaches(&d, sent.len());
        assert!(
            got == sent,
            "every record once, in order\n{}",
            d.log_tail(40)
        );
        assert!(
            took < END_OF_BURST_LIMIT,
            "the end of a short burst reached the plugin {took:?} after the last write (limit {END_OF_BURST_LIMIT:?})"
        );
    }

    // One record alone.
    std::thread::sleep(Duration::from_millis(20));
    write_frames(&mut auditd, &good[3300..3301]);
    sent.push(good[3300]);
    let (got, took) = sink_reaches(&d, sent.len());
    assert!(got == sent, "every record once, in order");
    assert!(
        took < LONE_RECORD_LIMIT,
        "a lone record took {took:?} (limit {LONE_RECORD_LIMIT:?})"
    );

    // End of input: audispd stops with nothing more, nothing twice.
    drop(auditd);
    let status = d.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", d.log_tail(40));
    let out = support::dispatcher::read_sink(&d.out("sink"));
    assert_eq!(out.records.len(), sent.len(), "{}", d.log_tail(40));
}
