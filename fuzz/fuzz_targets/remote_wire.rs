//! Fuzzes the remote-logging decoder (`audisp::remote::wire`) the way
//! audisp-receive uses it: arbitrary bytes from a client.
//!
//! Invariants checked:
//! * no panic;
//! * every frame consumes at least one byte and never more than it was given;
//! * a consumed frame is no larger than `MAX_MESSAGE`, and an incomplete
//!   prefix never makes the decoder ask for more than `MAX_MESSAGE` bytes;
//! * batch payloads either parse into non-empty records of at most
//!   `MAX_RECORD` bytes, numbered from 1 to at most `u64::MAX`, or are
//!   rejected.

#![no_main]

use audisp::remote::wire::{parse_batch, types, Decoder, Frame, MAX_MESSAGE, MAX_RECORD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let d = Decoder;
    let mut rest = data;
    loop {
        match d.next(rest) {
            Ok(Some((frame, n))) => {
                assert!(n > 0 && n <= rest.len() && n <= MAX_MESSAGE);
                if let Frame::Managed(h, p) = frame {
                    if h.mtype == types::FAST_BATCH {
                        if let Ok((first, recs)) = parse_batch(p) {
                            assert!(recs.iter().all(|r| !r.is_empty() && r.len() <= MAX_RECORD));
                            assert!(
                                first >= 1 && first.checked_add(recs.len() as u64 - 1).is_some()
                            );
                        }
                    }
                }
                rest = &rest[n..];
            }
            Ok(None) => {
                assert!(rest.len() < MAX_MESSAGE);
                break;
            }
            Err(_) => break,
        }
    }
});
