//! Partitioned projectors: one projector split into segments by a stable hash of the stream id.

use std::fmt;

use crate::event::StreamId;

/// One of `count` segments of a projector: it owns the streams whose stable hash falls on its
/// `index`, so every stream belongs to exactly one segment and per-stream order holds.
///
/// Each segment is a subscriber of its own, with its own name (see [`Segment::name`]), hence its
/// own checkpoint, lease and dead letters: several processes on one database share the work of
/// one projector, each segment run by whichever process holds its lease. A subscriber says
/// which segment it is with [`Subscriber::segment`](crate::Subscriber::segment); the runner and
/// [`Replay`](crate::Replay) then hand it only the events of its streams (its checkpoint still
/// moves past the others').
///
/// The hash is FNV-1a (64 bits) of the category, a zero byte and the id: stable across
/// processes, platforms and versions of this crate. Changing the count moves streams between
/// segments, so it needs a rebuild of the read model.
///
/// ```
/// use cqrs_core::{Segment, StreamId};
///
/// let segments = Segment::all(4);
/// let stream = StreamId::new("account", "a1");
/// let owners: Vec<_> = segments.iter().filter(|s| s.owns(&stream)).collect();
/// assert_eq!(owners.len(), 1);
/// assert_eq!(segments[2].name("accounts"), "accounts#2of4");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    index: u32,
    count: u32,
}

impl Segment {
    /// Segment `index` (from 0) of `count`. Panics unless `index < count`.
    pub fn new(index: u32, count: u32) -> Self {
        assert!(index < count, "segment {index} of {count} does not exist");
        Segment { index, count }
    }

    /// Every segment of `count`, in order.
    pub fn all(count: u32) -> Vec<Segment> {
        (0..count).map(|i| Segment::new(i, count)).collect()
    }

    /// Its index, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many segments there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the events of `stream` are this segment's.
    pub fn owns(&self, stream: &StreamId) -> bool {
        self.count == 1 || stable_hash(stream) % u64::from(self.count) == u64::from(self.index)
    }

    /// The subscriber name of this segment of the projector named `base`: `base#<index>of<count>`
    /// (`base` itself when there is one segment, so that a projector can start unsplit).
    pub fn name(&self, base: &str) -> String {
        if self.count == 1 {
            base.to_owned()
        } else {
            format!("{base}#{self}")
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}of{}", self.index, self.count)
    }
}

/// FNV-1a, 64 bits, over the category, a zero byte and the id.
fn stable_hash(stream: &StreamId) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = stream
        .category
        .bytes()
        .chain(std::iter::once(0))
        .chain(stream.id.bytes());
    bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_spreads_streams_over_segments() {
        // NOTE: fixed values: a change here moves streams between segments of running systems.
        assert_eq!(
            stable_hash(&StreamId::new("account", "a1")),
            0xbe9e_f121_db01_ff7a
        );
        let segments = Segment::all(4);
        let mut per = [0usize; 4];
        for i in 0..4000 {
            let stream = StreamId::new("account", format!("a{i}"));
            let owners: Vec<_> = segments.iter().filter(|s| s.owns(&stream)).collect();
            assert_eq!(owners.len(), 1, "{stream} has one owner");
            per[owners[0].index() as usize] += 1;
        }
        assert!(per.iter().all(|n| (800..1200).contains(n)), "{per:?}");
        assert!(Segment::new(0, 1).owns(&StreamId::new("x", "y")));
        assert_eq!(Segment::new(0, 1).name("accounts"), "accounts");
    }
}
