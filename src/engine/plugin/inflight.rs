//! Batches sent to a plugin and not yet known to be handled, oldest first,
//! each with the cursor position its handling reaches: the native window of
//! messages awaiting `ACK`s, and the stock output awaiting the plugin's
//! reads.

use std::collections::VecDeque;

use crate::engine::cursor::Position;

/// One message (native) or write batch (stock) not yet handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    /// Id that settles it (native: record or event id; stock: byte offset
    /// in the connection's output); None for a batch that held only
    /// skipped entries, which settles as soon as every batch before it has.
    ack: Option<u64>,
    /// The cursor once it is handled.
    position: Position,
    /// Records it carried.
    records: u64,
    /// Counted in `awaiting`: the first batch of a run of batches with the
    /// same id (the parts of one event split over several messages).
    counted: bool,
}

/// The batches of one connection.
#[derive(Debug, Default)]
pub(super) struct Inflight {
    batches: VecDeque<Batch>,
    /// Ids the batches wait for: batches with `ack` set, a run of batches
    /// with the same id counted once. The parts of an event split over
    /// several messages all carry the event's id, which the plugin can
    /// acknowledge only once it has the last part: counted per message, an
    /// event of more messages than the window would fill it with no
    /// acknowledgement to come, and delivery to that plugin would stop.
    awaiting: usize,
}

/// Where the plugin got to when batches settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settled {
    /// The cursor position of the last batch settled.
    pub position: Position,
    /// Records carried by the batches settled.
    pub records: u64,
}

impl Inflight {
    /// Adds the batch just sent (see [`Batch`]).
    pub fn push(&mut self, ack: Option<u64>, position: Position, records: u64) {
        let counted = ack.is_some() && self.batches.back().map(|b| b.ack) != Some(ack);
        if counted {
            self.awaiting += 1;
        }
        self.batches.push_back(Batch {
            ack,
            position,
            records,
            counted,
        });
    }

    /// Ids the batches wait for (a run of batches with one id counts once).
    pub fn awaiting(&self) -> usize {
        self.awaiting
    }

    /// Pops the batches settled by `handled` (everything up to that id; None
    /// settles only leading skipped-only batches), and says where the plugin
    /// got to.
    pub fn settle(&mut self, handled: Option<u64>) -> Option<Settled> {
        let mut last = None;
        let mut records = 0;
        while let Some(front) = self.batches.front() {
            let done = match front.ack {
                None => true,
                Some(a) => handled.is_some_and(|h| a <= h),
            };
            if !done {
                break;
            }
            if front.counted {
                self.awaiting -= 1;
            }
            records += front.records;
            last = Some(front.position);
            self.batches.pop_front();
        }
        last.map(|position| Settled { position, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(next: u64) -> Position {
        Position {
            acked: next - 1,
            replay_from: next,
        }
    }

    #[test]
    fn settles_in_order_up_to_the_id_handled() {
        let mut f = Inflight::default();
        f.push(Some(10), at(11), 3);
        f.push(None, at(15), 0);
        f.push(Some(20), at(21), 2);
        assert_eq!(f.awaiting(), 2);
        assert_eq!(f.settle(None), None, "the first batch waits for its id");
        assert_eq!(f.settle(Some(9)), None, "9 does not reach 10");
        assert_eq!(
            f.settle(Some(12)),
            Some(Settled {
                position: at(15),
                records: 3
            }),
            "10 and the skipped-only batch after it settle; 20 does not"
        );
        assert_eq!(f.awaiting(), 1);
        assert_eq!(
            f.settle(Some(20)),
            Some(Settled {
                position: at(21),
                records: 2
            })
        );
        assert_eq!(f.awaiting(), 0);
        assert_eq!(f.settle(Some(100)), None, "nothing left");
    }

    #[test]
    fn skipped_only_batches_settle_at_once_when_nothing_waits() {
        let mut f = Inflight::default();
        f.push(None, at(5), 0);
        assert_eq!(f.awaiting(), 0);
        assert_eq!(
            f.settle(None),
            Some(Settled {
                position: at(5),
                records: 0
            })
        );
    }

    #[test]
    fn the_parts_of_one_event_wait_as_one() {
        let mut f = Inflight::default();
        f.push(Some(10), at(5), 3);
        f.push(Some(10), at(8), 3);
        f.push(Some(10), at(11), 3);
        f.push(None, at(12), 0);
        f.push(Some(20), at(21), 2);
        assert_eq!(f.awaiting(), 2, "event 10's three messages count once");
        assert_eq!(f.settle(Some(9)), None);
        assert_eq!(
            f.settle(Some(10)),
            Some(Settled {
                position: at(12),
                records: 9
            })
        );
        assert_eq!(f.awaiting(), 1);
        f.push(Some(20), at(23), 1);
        assert_eq!(f.awaiting(), 1, "20 goes on in the next message");
        f.settle(Some(20));
        assert_eq!(f.awaiting(), 0);
    }
}
