//! Fuzzes the native plugin protocol's decoders (`audisp::protocol`): one
//! arbitrary `SOCK_SEQPACKET` message, as audispd receives it from any
//! process that connects to a plugin socket (`decode_from_plugin`) and as a
//! plugin receives it from audispd (`decode_from_dispatcher`).
//!
//! Invariants checked:
//! * no panic, also while iterating the records of an accepted
//!   `RECORDS`/`RECORDS_IN` message (their iterators index without checks,
//!   trusting the validation);
//! * a message that decodes is re-encoded by the matching encoder: byte for
//!   byte where the encoding is canonical (every kind but two; `REJECT` and
//!   `COMMAND_RESULT` when their text is within what the encoder sends), to
//!   a message that decodes to the same value where tagged fields may come
//!   in any order, repeat or be unknown (`HELLO`, `WELCOME`);
//! * no accepted record is longer than `MAX_RECORD_LEN`.

#![no_main]

use audisp::protocol::{
    decode_from_dispatcher, decode_from_plugin, encode_ack, encode_command, encode_command_result,
    encode_hello, encode_input_ack, encode_reject, encode_stats, encode_stats_request,
    encode_welcome, kind, negotiate, FromDispatcher, FromPlugin, RecordsBuilder,
};
use audisp::record::MAX_RECORD_LEN;
use libfuzzer_sys::fuzz_target;

fn from_plugin(data: &[u8]) {
    let Ok(m) = decode_from_plugin(data) else {
        return;
    };
    match &m {
        FromPlugin::Hello(h) => {
            let again = encode_hello(h);
            assert_eq!(decode_from_plugin(&again).as_ref(), Ok(&m));
            let _ = negotiate(h);
        }
        FromPlugin::Ack(id) => assert_eq!(&encode_ack(*id)[..], data),
        FromPlugin::StatsRequest(id) => assert_eq!(&encode_stats_request(*id)[..], data),
        FromPlugin::Command { id, name, args } => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let again = encode_command(*id, name, &args);
            assert_eq!(
                again.as_deref(),
                Ok(data),
                "COMMAND: encoder refuses what was accepted"
            );
        }
        FromPlugin::RecordsIn(recs) => {
            let mut b = if data[0] == kind::RECORDS_IN_ORIGIN {
                RecordsBuilder::input_origin(data.len())
            } else {
                RecordsBuilder::input(data.len())
            };
            for r in recs.iter() {
                assert!(r.text.len() <= MAX_RECORD_LEN);
                assert!(b.push_input(&r), "RECORDS_IN: a record does not fit again");
            }
            assert_eq!(b.len(), recs.len());
            assert_eq!(b.message(), data);
        }
    }
}

fn from_dispatcher(data: &[u8]) {
    let Ok(m) = decode_from_dispatcher(data) else {
        return;
    };
    match &m {
        FromDispatcher::Welcome(w) => {
            let again = encode_welcome(w);
            assert_eq!(decode_from_dispatcher(&again).as_ref(), Ok(&m));
        }
        FromDispatcher::Reject(reason) => {
            if reason.len() <= 1024 {
                let again = encode_reject(reason);
                assert_eq!(&again[..], data);
            }
        }
        FromDispatcher::Records(recs) if data[0] == kind::RECORDS_ORIGIN => {
            // Names may come in any order (and unused ones too): the
            // re-encoding reads back as the same records, not the same bytes.
            let mut b = RecordsBuilder::output_origin(data.len());
            for r in recs.iter() {
                assert!(r.text.len() <= MAX_RECORD_LEN);
                assert!(b.push(&r), "RECORDS_ORIGIN: a record does not fit again");
            }
            let again = b.message().to_vec();
            let Ok(FromDispatcher::Records(back)) = decode_from_dispatcher(&again) else {
                panic!("RECORDS_ORIGIN: re-encoding does not decode");
            };
            assert!(back.iter().eq(recs.iter()), "RECORDS_ORIGIN: records differ");
        }
        FromDispatcher::Records(recs) => {
            let mut b = RecordsBuilder::output(data.len());
            for r in recs.iter() {
                assert!(r.text.len() <= MAX_RECORD_LEN);
                assert!(b.push(&r), "RECORDS: a record does not fit again");
            }
            assert_eq!(b.len(), recs.len());
            assert_eq!(b.message(), data);
        }
        FromDispatcher::Stats { id, json } => assert_eq!(encode_stats(*id, json), data),
        FromDispatcher::CommandResult {
            id,
            status,
            message,
        } => {
            if message.len() <= 4096 {
                let again = encode_command_result(*id, *status, message);
                assert_eq!(&again[..], data);
            }
        }
        FromDispatcher::InputAck(seq) => assert_eq!(&encode_input_ack(*seq)[..], data),
    }
}

fuzz_target!(|data: &[u8]| {
    from_plugin(data);
    from_dispatcher(data);
});
