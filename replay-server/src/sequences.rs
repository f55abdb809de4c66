//! Which batches each insert stream has stored, so a batch resent after a
//! lost connection or a server restart is stored once. A sender names its
//! stream (a random id kept across reconnects) and numbers its batches; the
//! replay remembers the last number stored per stream, and checkpoints it
//! with the contents it describes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Streams remembered at most; the least recently used are forgotten first
/// (a stream silent that long has long since resent what it had).
pub const MAX_STREAMS: usize = 65_536;

/// One stream's last stored batch. Its lock is held from the duplicate
/// check to the insert, so two connections of one sender (an old one the
/// server has not yet noticed is gone, and its replacement) cannot both
/// store a batch.
#[derive(Debug, Default)]
pub struct StreamSeq {
    pub last: u64,
    /// Transitions the stream's batches stored, so an operator (or a chaos
    /// test) can reconcile them with what the sender saw acknowledged.
    pub transitions: u64,
    used: u64,
}

/// A stream as a checkpoint and the Info call see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamRecord {
    pub id: u64,
    /// Its last stored batch.
    pub last: u64,
    pub transitions: u64,
}

#[derive(Debug, Default)]
pub struct Sequences {
    streams: Mutex<HashMap<u64, Arc<Mutex<StreamSeq>>>>,
    clock: AtomicU64,
}

impl Sequences {
    /// Remembers `streams` as a checkpoint held them.
    pub fn restore(streams: &[StreamRecord]) -> Self {
        let s = Sequences::default();
        {
            let mut map = s.streams.lock();
            for r in streams {
                let seq = StreamSeq {
                    last: r.last,
                    transitions: r.transitions,
                    used: 0,
                };
                map.insert(r.id, Arc::new(Mutex::new(seq)));
            }
        }
        s
    }

    /// The record of stream `id`, created on first use.
    pub fn stream(&self, id: u64) -> Arc<Mutex<StreamSeq>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut map = self.streams.lock();
        if map.len() >= MAX_STREAMS && !map.contains_key(&id) {
            forget_least_recent(&mut map);
        }
        let entry = map.entry(id).or_default().clone();
        drop(map);
        entry.lock().used = now;
        entry
    }

    /// Every stream's record, by id. Consistent with the store only while
    /// no insert is under way (the replay's insert gate sees to it).
    pub fn snapshot(&self) -> Vec<StreamRecord> {
        let map = self.streams.lock();
        let mut out: Vec<StreamRecord> = map
            .iter()
            .map(|(&id, s)| {
                let s = s.lock();
                StreamRecord {
                    id,
                    last: s.last,
                    transitions: s.transitions,
                }
            })
            .collect();
        out.sort_unstable();
        out
    }

    pub fn len(&self) -> usize {
        self.streams.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the least recently used tenth of the streams: rare, and amortized.
fn forget_least_recent(map: &mut HashMap<u64, Arc<Mutex<StreamSeq>>>) {
    let mut used: Vec<(u64, u64)> = map.iter().map(|(&id, s)| (s.lock().used, id)).collect();
    let drop_n = (map.len() / 10).max(1);
    used.select_nth_unstable(drop_n - 1);
    for &(_, id) in &used[..drop_n] {
        map.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_remembered_and_restored() {
        let s = Sequences::default();
        s.stream(7).lock().last = 3;
        s.stream(7).lock().transitions = 192;
        s.stream(9).lock().last = 1;
        let record = |id, last, transitions| StreamRecord {
            id,
            last,
            transitions,
        };
        assert_eq!(s.snapshot(), vec![record(7, 3, 192), record(9, 1, 0)]);
        let back = Sequences::restore(&s.snapshot());
        assert_eq!(back.stream(7).lock().last, 3);
        assert_eq!(back.stream(7).lock().transitions, 192);
        assert_eq!(back.stream(8).lock().last, 0, "a new stream starts at 0");
    }

    #[test]
    fn the_least_recently_used_streams_are_forgotten_beyond_the_cap() {
        let s = Sequences::default();
        for id in 0..MAX_STREAMS as u64 {
            s.stream(id).lock().last = 1;
        }
        s.stream(0); // used again: kept
        s.stream(u64::MAX);
        assert!(s.len() <= MAX_STREAMS);
        assert_eq!(s.stream(0).lock().last, 1);
        assert_eq!(s.stream(1).lock().last, 0, "stream 1 was the least recent");
    }
}
