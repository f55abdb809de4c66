//! The sending side of frames: names each channel of an insert stream's
//! observations. A channel already sent (stacked observations shift by one
//! frame per step, and reset stacks repeat a frame) keeps its id; a new one
//! gets the stream's next id and waits, encoded, for the next request.
//! Ids are reused only while younger than [`FRAME_REUSE_AGE`], so a screen
//! that never changes is re-sent before it leaves the server's window.

use bytes::Bytes;

use crate::v1::{Codec, Frame};
use crate::FRAME_REUSE_AGE;

/// One observation as the stream named it: its bytes and one frame id per channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedObs {
    pub obs: Bytes,
    pub ids: Vec<u64>,
}

pub struct FrameStream {
    codec: Codec,
    channels: usize,
    next_id: u64,
    pending: Vec<Frame>,
}

impl FrameStream {
    pub fn new(codec: Codec, channels: usize) -> Self {
        assert!(channels > 0, "observations need at least one channel");
        FrameStream {
            codec,
            channels,
            next_id: 0,
            pending: Vec::new(),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Names `obs`, reusing the ids of `prev` (the same environment's
    /// previous observation) for frames it already holds.
    pub fn name(&mut self, prev: Option<&NamedObs>, obs: Bytes) -> NamedObs {
        let size = obs.len() / self.channels;
        let frame = |o: &Bytes, k: usize| o.slice(k * size..(k + 1) * size);
        let oldest = self.next_id.saturating_sub(FRAME_REUSE_AGE);
        let young = |id: &u64| *id >= oldest;
        let mut ids = Vec::with_capacity(self.channels);
        for k in 0..self.channels {
            let this = frame(&obs, k);
            let last = k + 1 == self.channels;
            // The usual case first: channel k was channel k + 1 a step ago.
            // The newest channel is usually new: only an unchanged screen
            // (the same frame again) is worth looking for.
            let id = prev
                .and_then(|p| {
                    let held = |j: usize| (frame(&p.obs, j) == this).then(|| p.ids[j]);
                    if last {
                        held(k)
                    } else {
                        (k + 1..self.channels).chain(0..=k).find_map(held)
                    }
                })
                .filter(young)
                .or_else(|| {
                    let earlier = if last && k > 0 { k - 1..k } else { 0..k };
                    earlier
                        .into_iter()
                        .find(|&j| frame(&obs, j) == this)
                        .map(|j| ids[j])
                        .filter(young)
                })
                .unwrap_or_else(|| {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.pending.push(Frame {
                        id,
                        data: self.codec.encode(&this).into(),
                    });
                    id
                });
            ids.push(id);
        }
        NamedObs { obs, ids }
    }

    /// The frames named since the last call, for the next request.
    pub fn take_frames(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.pending)
    }

    /// Frames named so far.
    pub fn frames_named(&self) -> u64 {
        self.next_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[u8]) -> Bytes {
        frames
            .iter()
            .flat_map(|&f| [f; 3])
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn shifted_and_repeated_frames_keep_their_ids() {
        let mut s = FrameStream::new(Codec::None, 4);
        let a = s.name(None, stack(&[1, 1, 1, 1]));
        assert_eq!(a.ids, vec![0, 0, 0, 0], "a reset stack repeats one frame");
        let b = s.name(Some(&a), stack(&[1, 1, 1, 2]));
        assert_eq!(b.ids, vec![0, 0, 0, 1]);
        let c = s.name(Some(&b), stack(&[1, 1, 2, 3]));
        assert_eq!(c.ids, vec![0, 0, 1, 2]);
        let frames = s.take_frames();
        assert_eq!(
            frames.iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(&frames[2].data[..], &[3, 3, 3]);
        assert!(s.take_frames().is_empty());
        // A new episode's first stack shares nothing with the last one.
        let d = s.name(Some(&c), stack(&[9, 9, 9, 9]));
        assert_eq!(d.ids, vec![3, 3, 3, 3]);
        assert_eq!(s.frames_named(), 4);
    }

    #[test]
    fn an_unchanged_screen_is_sent_again_before_its_id_gets_old() {
        let mut s = FrameStream::new(Codec::None, 4);
        let mut still = s.name(None, stack(&[7, 7, 7, 7]));
        let mut moving = s.name(None, stack(&[0, 0, 0, 0]));
        for step in 1..3 * FRAME_REUSE_AGE {
            still = s.name(Some(&still), stack(&[7, 7, 7, 7]));
            let f = (step % 200) as u8;
            moving = s.name(Some(&moving), stack(&[f, f, f, f]));
            let newest = s.frames_named() - 1;
            assert!(
                still.ids.iter().all(|&id| newest - id <= FRAME_REUSE_AGE),
                "step {step}: {:?} next to {newest}",
                still.ids
            );
        }
        let resent = s.take_frames().iter().filter(|f| f.data[0] == 7).count();
        assert!(resent >= 2, "the still frame was sent {resent} times");
    }
}
