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
