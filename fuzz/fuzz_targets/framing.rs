//! Fuzzes the input decoders (`audisp::framing`): arbitrary bytes, or binary
//! streams built from them, fed in arbitrary chunkings.
//!
//! Invariants checked:
//! * no panic;
//! * the output (records and reports) does not depend on how the stream is
//!   split into chunks;
//! * no record is longer than `MAX_RECORD_LEN`;
//! * a well-formed exact stream decodes, exact or auto, to exactly its
//!   records; a padded stream decodes with `Padded` to exactly its records
//!   whatever its padding holds;
//! * an exact stream with one V1 frame cut short (a short write) decodes with
//!   `Exact` to every other record and one `Truncated` report.
//!
//! Input layout: byte 0 = flags (bit 0: build a binary stream from the rest,
//! bit 1: padded layout for it, bit 2: call `input_idle` before `finish`,
//! bit 3: cut one V1 frame of an exact stream short, chosen by the seed),
//! bytes 1..9 = seed of the chunking, the rest = data.

#![no_main]

use audisp::framing::{BinaryFraming, Decoder, InputFormat, Item, MalformedKind};
use audisp::record::MAX_RECORD_LEN;
use libfuzzer_sys::fuzz_target;

/// An item with its borrow ended.
#[derive(Debug, PartialEq)]
enum Out {
    Rec(Vec<u8>, Option<u32>),
    Bad(MalformedKind, u64, u64, String),
}

fn decode(format: InputFormat, chunks: &[&[u8]], idle: bool) -> Vec<Out> {
    let mut outs = Vec::new();
    let mut push = |item: Item<'_>| match item {
        Item::Record { text, type_hint } => {
            assert!(
                text.len() <= MAX_RECORD_LEN,
                "record of {} bytes",
                text.len()
            );
            outs.push(Out::Rec(text.to_vec(), type_hint));
        }
        Item::Malformed(m) => outs.push(Out::Bad(m.kind, m.offset, m.skipped, m.detail)),
    };
    let mut d = Decoder::new(format);
    for c in chunks {
        d.feed(c, &mut push);
    }
    if idle {
        d.input_idle(&mut push);
    }
    d.finish(&mut push);
    outs
}

/// Splits `input` into chunks whose sizes come from `seed`.
fn chunk(input: &[u8], mut seed: u64) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let max = [1, 7, 64, 4096, 20000][(seed % 5) as usize];
        let n = ((seed >> 8) as usize % max + 1).min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    chunks
}

/// Builds a binary stream of well-formed frames from `data`; returns the
/// stream and where each frame starts, with its protocol version.
fn build(data: &[u8], padded: bool) -> (Vec<u8>, Vec<(usize, u32)>) {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    let mut rest = data;
    let mut serial = 0u32;
    while rest.len() >= 3 {
        let ver = u32::from(rest[0] & 1);
        let rtype = if rest[1] == 255 {
            u32::MAX
        } else {
            1000 + u32::from(rest[1])
        };
        let want = usize::from(rest[2]) * 37;
        rest = &rest[3..];
        let n = want.min(rest.len());
        serial += 1;
        let mut payload = if ver == 0 {
            format!("audit(1721000000.{:03}:{serial}): ", serial % 1000).into_bytes()
        } else {
            format!(
                "type=USER msg=audit(1721000000.{:03}:{serial}): ",
                serial % 1000
            )
            .into_bytes()
        };
        // Record text holds neither NUL nor the 0x01 a header starts with.
        payload.extend(rest[..n].iter().map(|&b| if b <= 1 { b' ' } else { b }));
        payload.truncate(8970);
        rest = &rest[n..];
        frames.push((stream.len(), ver));
        for w in [ver, 16, rtype, payload.len() as u32] {
            stream.extend_from_slice(&w.to_ne_bytes());
        }
        stream.extend_from_slice(&payload);
        if padded {
            // Padding taken from the fuzz data: it may hold anything.
            let pad = 8970 - payload.len();
            stream.extend((0..pad).map(|i| data.get(i % data.len().max(1)).copied().unwrap_or(0)));
        }
    }
    (stream, frames)
}

/// Cuts the first V1 frame at or after frame `seed % n` short by 1..=20
/// payload bytes (its header still promising them), as a short write would;
/// returns whether one was cut.
fn cut_one(stream: &mut Vec<u8>, frames: &[(usize, u32)], seed: u64) -> bool {
    if frames.is_empty() {
        return false;
    }
    let first = (seed % frames.len() as u64) as usize;
    let Some(i) = (first..frames.len()).find(|&i| frames[i].1 == 1) else {
        return false;
    };
    let end = frames.get(i + 1).map_or(stream.len(), |f| f.0);
    // Every payload starts with a record header of at least 26 bytes. An
    // 8970-byte payload cut by one byte and followed by a V0 header ends in
    // one NUL, as a whole one does: streams never mix versions, so that cut
    // is not made.
    let next_v0 = frames.get(i + 1).is_some_and(|f| f.1 == 0);
    let cut = (1 + (seed >> 20) as usize % 20).max(if next_v0 { 2 } else { 1 });
    stream.drain(end - cut..end);
    true
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let flags = data[0];
    let seed = u64::from_le_bytes(data[1..9].try_into().unwrap()) | 1;
    let data = &data[9..];
    let idle = flags & 4 != 0;
    let formats = [
        InputFormat::String,
        InputFormat::Binary(BinaryFraming::Exact),
        InputFormat::Binary(BinaryFraming::Padded),
        InputFormat::Binary(BinaryFraming::Auto),
    ];
    let built;
    let mut cut = false;
    let (input, frames, padded) = if flags & 1 != 0 {
        let padded = flags & 2 != 0;
        let (mut stream, starts) = build(data, padded);
        if flags & 8 != 0 && !padded {
            cut = cut_one(&mut stream, &starts, seed);
        }
        built = stream;
        (&built[..], Some(starts.len()), padded)
    } else {
        (data, None, false)
    };
    for format in formats {
        let whole = decode(format, &[input], idle);
        let split = decode(format, &chunk(input, seed), idle);
        assert_eq!(whole, split, "{format:?}: chunking changed the output");
        let Some(frames) = frames else { continue };
        let records = whole.iter().filter(|o| matches!(o, Out::Rec(..))).count();
        let reports: Vec<&Out> = whole.iter().filter(|o| matches!(o, Out::Bad(..))).collect();
        if cut {
            if format == InputFormat::Binary(BinaryFraming::Exact) {
                assert_eq!(records, frames - 1, "{reports:?}");
                let one_cut = matches!(reports[..], [Out::Bad(MalformedKind::Truncated, ..)]);
                assert!(one_cut, "{reports:?}");
            }
            continue;
        }
        let clean = match format {
            InputFormat::Binary(BinaryFraming::Exact) => !padded,
            InputFormat::Binary(BinaryFraming::Padded) => padded,
            InputFormat::Binary(BinaryFraming::Auto) => !padded,
            _ => false,
        };
        if clean {
            assert_eq!(records, frames, "{format:?}: {reports:?}");
            let only_guess = reports
                .iter()
                .all(|o| matches!(o, Out::Bad(MalformedKind::AmbiguousFraming, ..)));
            assert!(only_guess, "{format:?}: {reports:?}");
        }
    }
});
