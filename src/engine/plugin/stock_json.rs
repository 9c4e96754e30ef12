//! JSON for stock plugins (`format = "json"`): whole events, one JSON object
//! per line, exactly the JSON audisp-logfile writes ([`crate::format::json`]),
//! so that a program in any language reads its standard input with its
//! standard library.
//!
//! Events are built from the journal as for a native plugin in events mode,
//! by an [`Assembler`] that decides nothing itself: an event is written once
//! the journal says it ended, at its end record or at the close marker the
//! grouper wrote when it ended it by its timeout, by the open-event limit or
//! at shutdown. So an event that never gets its end record is still
//! delivered (with the records it got), at most the event timeout late.
//!
//! What goes in a line: an event goes if one of its records is of an
//! included type (every event when `include` is empty), and records of
//! excluded types or of inputs the plugin does not take are left out of it,
//! as for native events; an event with no record left (or only `EOE`) is
//! not written. `drop_fields` is applied to each record before conversion.
//!
//! The line is a unit of [`Stock`](super::stock::Stock)'s output like a
//! record in the other formats: it settles once the plugin has read its
//! newline, and then the cursor says the event is handled (`acked` is the
//! journal entry that ended it) and reading restarts where the oldest event
//! still being built began, so that a new connection rebuilds those events
//! and writes no handled event again.

use std::borrow::Cow;

use super::filtering::EventFilter;
use crate::engine::cursor::Position;
use crate::engine::events::Assembler;
use crate::engine::routes::Routes;
use crate::engine::subscription::{Filter, Subscription};
use crate::format::drop_fields::DropFields;
use crate::format::JsonWriter;
use crate::journal::EntryRef;

/// Building events and writing them as JSON lines for one connection.
pub(super) struct JsonEvents {
    /// An event goes if one of its records passes.
    select: Filter,
    /// The records of an event that go.
    keep: Filter,
    assembler: Assembler,
    json: JsonWriter,
}

/// An event written as a line.
pub(super) struct Written {
    /// Records in it.
    pub records: u64,
    /// The cursor once the plugin has read it.
    pub position: Position,
}

impl JsonEvents {
    /// Events for a plugin with `subscription`'s record types.
    pub(super) fn new(subscription: &Subscription) -> JsonEvents {
        JsonEvents {
            select: subscription.select.clone(),
            keep: subscription.keep.clone(),
            assembler: Assembler::new(),
            json: JsonWriter::new(),
        }
    }

    /// Takes the next journal entry. When it completes an event the plugin
    /// gets, and that event was not handled already (it ended after
    /// `skip_upto`), appends the event's JSON and a newline to `out`.
    pub(super) fn take(
        &mut self,
        e: &EntryRef<'_>,
        routes: &mut Routes,
        drop: &mut Option<DropFields>,
        filter: Option<&mut EventFilter>,
        skip_upto: u64,
        out: &mut Vec<u8>,
    ) -> Option<Written> {
        let mut event = self.assembler.push(e)?;
        if event.close_seq <= skip_upto {
            return None;
        }
        event.retain(|r| routes.wants(r.source));
        // The plugin's filter decides on the whole event, every type, before
        // include/exclude and drop_fields (as for the other formats).
        if let Some(f) = filter {
            if !event.is_empty() && !f.passes(&event) {
                f.withhold(event.close_seq, event.len());
                return None;
            }
        }
        if !event.records().any(|(r, _)| self.select.wants(r.rtype)) {
            return None;
        }
        let keep = &self.keep;
        event.retain(|r| keep.wants(r.rtype));
        if event.is_empty() {
            return None;
        }
        // The input the event arrived on, as audisp-logfile writes it.
        let source = event.records().next().map(|(r, _)| r.source);
        let origin = source.map(|src| routes.name(src)).filter(|n| !n.is_empty());
        let texts: Vec<Cow<'_, [u8]>> = event
            .records()
            .map(|(_, text)| match drop {
                Some(d) => d.apply(text),
                None => Cow::Borrowed(text),
            })
            .collect();
        let records: Vec<&[u8]> = texts.iter().map(|t| t.as_ref()).collect();
        self.json.write_event_from(&records, origin, out);
        out.push(b'\n');
        Some(Written {
            records: records.len() as u64,
            position: self.position_after(event.close_seq + 1),
        })
    }

    /// The cursor once everything read before `next` is handled: events
    /// still being built are read again from their first record.
    pub(super) fn position_after(&mut self, next: u64) -> Position {
        Position {
            acked: next - 1,
            replay_from: self.assembler.replay_point(next),
        }
    }

    /// Records were skipped (overflow, journal limit): the events being
    /// built lost their beginning; start afresh.
    pub(super) fn forget_partial(&mut self) {
        self.assembler = Assembler::new();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::sync::Arc;

    use nix::sys::socket::SockType;

    use super::*;
    use crate::engine::plugin::stock::{Encoding, Stock};
    use crate::engine::plugin::testing::{append, journal, pair, text, TestHost};
    use crate::engine::plugin::Delivery;
    use crate::journal::entry::flags;
    use crate::journal::{Journal, NewEntry};

    /// A JSON stock delivery for a program audispd started (its end held),
    /// with `include`/`exclude`, from the host's cursor.
    fn json(host: &TestHost, include: &[u32], exclude: &[u32]) -> (Stock, OwnedFd) {
        let (ours, theirs) = pair(SockType::Stream);
        let peer = theirs.try_clone().unwrap();
        let s = Stock::new(
            ours,
            Some(peer),
            Encoding::Json,
            Subscription::new(include, exclude, &[], &[]),
            Routes::new(None, false, Arc::new(|_| None)),
            None,
            host.position.acked,
        );
        (s, theirs)
    }

    /// Reads what is waiting at the plugin's end.
    fn read_all(peer: &OwnedFd) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match nix::unistd::read(peer, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The lines audisp-logfile's converter writes for events of records
    /// with these sequence numbers.
    fn want(events: &[Vec<u64>], len: usize) -> Vec<u8> {
        let mut w = JsonWriter::new();
        let mut out = Vec::new();
        for ev in events {
            let texts: Vec<Vec<u8>> = ev.iter().map(|&s| text(s, len)).collect();
            let recs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
            w.write_event(&recs, &mut out);
            out.push(b'\n');
        }
        out
    }

    /// Appends one record of `event` with `rtype` and `flags`.
    fn record(j: &Journal, event: u64, rtype: u32, fl: u16) -> u64 {
        let t = text(j.end(), 60);
        let e = NewEntry {
            event,
            source_seq: 0,
            rtype,
            source: 1,
            flags: fl,
            origin: None,
            text: t.as_slice().into(),
        };
        j.append(&[e]).unwrap().seqs.next().unwrap()
    }

    #[test]
    fn each_event_is_one_line_of_logfile_json_handled_once_read() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let events = append(&j, 10, 3, 200);
        let (mut s, plugin) = json(&host, &[], &[]);
        s.fill(&mut host).unwrap();
        assert_eq!(host.delivered, 30, "records sent");
        assert_eq!(host.position.acked, 0, "nothing read yet");
        let got = read_all(&plugin);
        assert_eq!(got, want(&events, 200));
        for line in got.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v["SYSCALL"].as_object().map(|o| o.len()), Some(2));
            assert_eq!(v["SYSCALL#3"]["syscall"], 59, "three records per line");
        }
        s.heard(false, &mut host).unwrap();
        let last = events[9][2];
        assert_eq!(
            host.position,
            Position {
                acked: last,
                replay_from: last + 1
            }
        );
        assert_eq!(host.handled, 30);
    }

    #[test]
    fn a_program_that_dies_mid_line_gets_that_event_again_whole_and_no_other() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let events = append(&j, 10, 3, 200);
        let (mut s, plugin) = json(&host, &[], &[]);
        s.fill(&mut host).unwrap();
        let line = want(&events[..1], 200).len();
        // Four and a half lines read, then it dies.
        let mut buf = vec![0; line * 9 / 2];
        assert_eq!(nix::unistd::read(&plugin, &mut buf).unwrap(), buf.len());
        drop(plugin);
        s.salvage(&mut host);
        assert_eq!(host.position.acked, events[3][2], "four events handled");
        assert_eq!(host.handled, 12);

        host.reader.seek(host.position.replay_from);
        let (mut s, plugin) = json(&host, &[], &[]);
        s.fill(&mut host).unwrap();
        assert_eq!(read_all(&plugin), want(&events[4..], 200));
        s.heard(false, &mut host).unwrap();
        assert_eq!((host.position.acked, host.handled), (events[9][2], 30));
    }

    #[test]
    fn an_event_still_open_is_rebuilt_and_its_close_marker_releases_it() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        // Event 100 begins, event 101 comes whole, event 100 goes on.
        let a1 = record(&j, 100, 1300, 0);
        let b = record(&j, 101, 1300, flags::ENDS_EVENT);
        let a2 = record(&j, 100, 1302, 0);
        let (mut s, plugin) = json(&host, &[], &[]);
        s.fill(&mut host).unwrap();
        assert_eq!(read_all(&plugin), want(&[vec![b]], 60));
        s.heard(false, &mut host).unwrap();
        assert_eq!(
            host.position,
            Position {
                acked: a2,
                replay_from: a1
            },
            "handled through the last entry; event 100 is read again"
        );
        drop(plugin);
        s.salvage(&mut host);

        // The grouper ends event 100 by its timeout: the next connection
        // rebuilds it and writes it once, without event 101 again.
        let marker = j
            .append(&[NewEntry::close_marker(100, 1)])
            .unwrap()
            .seqs
            .next()
            .unwrap();
        host.reader.seek(host.position.replay_from);
        let (mut s, plugin) = json(&host, &[], &[]);
        s.fill(&mut host).unwrap();
        assert_eq!(read_all(&plugin), want(&[vec![a1, a2]], 60));
        s.heard(false, &mut host).unwrap();
        assert_eq!(host.position.acked, marker);
        assert_eq!(host.position.replay_from, marker + 1);
    }

    #[test]
    fn include_selects_events_and_exclude_removes_records_from_them() {
        let (_dir, j) = journal();
        let mut host = TestHost::at_end(&j);
        let s1 = record(&j, 200, 1300, 0);
        let c1 = record(&j, 200, 1307, 0);
        let p1 = record(&j, 200, 1327, flags::ENDS_EVENT);
        let s2 = record(&j, 201, 1300, 0);
        let _p2 = record(&j, 201, 1327, flags::ENDS_EVENT);
        let lone_cwd = record(&j, 202, 1307, flags::ENDS_EVENT);
        // Events with a CWD record, without their PROCTITLE records.
        let (mut s, plugin) = json(&host, &[1307], &[1327]);
        s.fill(&mut host).unwrap();
        assert_eq!(
            read_all(&plugin),
            want(&[vec![s1, c1], vec![lone_cwd]], 60),
            "event {s2} has no CWD; {p1} is excluded"
        );
        assert_eq!(host.delivered, 3);
        s.heard(false, &mut host).unwrap();
        assert_eq!(host.position.acked, lone_cwd);
    }
}
