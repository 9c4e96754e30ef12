//! Records grouped into events exactly as audispd groups them, for tests
//! that compare a plugin's per-event output with an in-process conversion.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use audisp::engine::events::Grouper;
use audisp::record;

/// Groups records into events the way the dispatcher does, in the order the
/// events end.
pub fn events<'a>(lines: &[&'a [u8]]) -> Vec<Vec<&'a [u8]>> {
    let mut grouper = Grouper::new(Duration::from_secs(2), 64 * 1024);
    let now = Instant::now();
    let mut open: BTreeMap<u64, Vec<&[u8]>> = BTreeMap::new();
    let mut done = Vec::new();
    let mut closes = Vec::new();
    for l in lines {
        closes.clear();
        let p = grouper.place(record::parse(l).as_ref(), now, &mut closes);
        for c in &closes {
            done.extend(open.remove(c));
        }
        open.entry(p.event).or_default().push(*l);
        if p.ends {
            done.extend(open.remove(&p.event));
        }
    }
    done.extend(open.into_values());
    // The dispatcher drops events made of EOE records only.
    done.retain(|ev| {
        ev.iter()
            .any(|l| record::parse(l).is_none_or(|r| r.rtype != 1320))
    });
    done
}

/// Three chunks of string records for tests of a plugin killed before it
/// acknowledged an event ended by a close marker (whose ack id lies past its
/// last record): `open`, a kept SYSCALL + PATH event; `later`, a record
/// 100 s later that a `type r= SYSCALL` filter withholds and whose arrival
/// ends `open` with a close marker; `closed`, a kept event that ends with
/// its own record, sent after the restart.
pub struct MarkerClosed {
    pub open: &'static str,
    pub later: &'static str,
    pub closed: &'static str,
}

/// The records of [`MarkerClosed`].
pub const MARKER_CLOSED: MarkerClosed = MarkerClosed {
    open: "type=SYSCALL msg=audit(1700000000.000:100): arch=c000003e syscall=257 success=yes exit=3 items=1 comm=\"rm\" exe=\"/usr/bin/rm\"\n\
           type=PATH msg=audit(1700000000.000:100): item=0 name=\"/etc/hosts\" nametype=NORMAL\n",
    later: "type=USER_START msg=audit(1700000100.000:101): pid=1 uid=0 msg='op=login res=success'\n",
    closed: "type=SYSCALL msg=audit(1700000200.000:102): arch=c000003e syscall=257 success=yes exit=3 items=0 comm=\"rm\" exe=\"/usr/bin/rm\"\n\
             type=PROCTITLE msg=audit(1700000200.000:102): proctitle=636174\n",
};
