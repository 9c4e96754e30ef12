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
//!   whatever its padding holds.
//!
//! Input layout: byte 0 = flags (bit 0: build a binary stream from the rest,
//! bit 1: padded layout for it, bit 2: call `input_idle` before `finish`),
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
/// stream and how many frames it has.
fn build(data: &[u8], padded: bool) -> (Vec<u8>, usize) {
    let mut stream = Vec::new();
    let mut frames = 0;
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
        payload.extend(rest[..n].iter().map(|&b| if b == 0 { b' ' } else { b }));
        payload.truncate(8970);
        rest = &rest[n..];
        for w in [ver, 16, rtype, payload.len() as u32] {
            stream.extend_from_slice(&w.to_ne_bytes());
        }
        stream.extend_from_slice(&payload);
        if padded {
            // Padding taken from the fuzz data: it may hold anything.
            let pad = 8970 - payload.len();
            stream.extend((0..pad).map(|i| data.get(i % data.len().max(1)).copied().unwrap_or(0)));
        }
        frames += 1;
    }
    (stream, frames)
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
    let (input, frames, padded) = if flags & 1 != 0 {
        let padded = flags & 2 != 0;
        let (stream, frames) = build(data, padded);
        built = stream;
        (&built[..], Some(frames), padded)
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
