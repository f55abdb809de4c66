//! Stored frames: one allocation per distinct frame, shared by every item
//! that refers to it (a stacked observation and its n-step successor share
//! most of their frames), freed with the last item. A ledger counts the
//! bytes alive so the server can report memory per transition.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Bytes allocated per frame beyond its data: the `Arc` header and fields
/// below, and two allocator headers.
pub const FRAME_OVERHEAD: usize = 16 + std::mem::size_of::<FrameData>() + 2 * 16;

/// Live frame bytes (data plus overhead) of one replay.
#[derive(Debug, Default)]
pub struct Ledger {
    bytes: AtomicI64,
    frames: AtomicI64,
}

impl Ledger {
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed).max(0) as usize
    }

    pub fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed).max(0) as usize
    }
}

#[derive(Debug)]
pub struct FrameData {
    /// Encoded as the actor sent it (see `apex.v1.Codec`).
    data: Box<[u8]>,
    ledger: Arc<Ledger>,
}

impl Drop for FrameData {
    fn drop(&mut self) {
        self.ledger
            .bytes
            .fetch_sub((self.data.len() + FRAME_OVERHEAD) as i64, Ordering::Relaxed);
        self.ledger.frames.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A shared, immutable encoded frame.
pub type Frame = Arc<FrameData>;

pub fn new_frame(data: &[u8], ledger: &Arc<Ledger>) -> Frame {
    ledger
        .bytes
        .fetch_add((data.len() + FRAME_OVERHEAD) as i64, Ordering::Relaxed);
    ledger.frames.fetch_add(1, Ordering::Relaxed);
    Arc::new(FrameData {
        data: data.into(),
        ledger: ledger.clone(),
    })
}

impl FrameData {
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

/// Lets a sampled frame travel as `Bytes` without copying it.
pub struct SharedFrame(pub Frame);

impl AsRef<[u8]> for SharedFrame {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_frames_until_the_last_holder_drops() {
        let ledger = Arc::new(Ledger::default());
        let a = new_frame(&[1, 2, 3], &ledger);
        let shared = a.clone();
        assert_eq!(ledger.bytes(), 3 + FRAME_OVERHEAD);
        assert_eq!(ledger.frames(), 1);
        drop(a);
        assert_eq!(ledger.frames(), 1, "still held");
        drop(shared);
        assert_eq!((ledger.bytes(), ledger.frames()), (0, 0));
    }
}
