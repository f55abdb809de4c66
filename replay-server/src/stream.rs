//! One actor's insert stream: its recent frames, numbered as the actor sent
//! them, and the turning of each request into stored items. A request is
//! checked whole before anything of it is kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use apex_proto::codec::CodecError;
use apex_proto::v1::{Codec, InsertRequest};
use apex_proto::STREAM_FRAME_WINDOW;

use crate::frame::{new_frame, Frame, Ledger};
use crate::shard::Item;
use crate::store::{Layout, NewItem};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StreamError {
    #[error("obs_shape is missing: send the observation shape (channels first)")]
    NoShape,
    #[error("observation shape {0:?} needs two to four non-zero dimensions (channels first), at most {MAX_CHANNELS} channels and {MAX_FRAME_BYTES} bytes per channel")]
    BadShape(Vec<usize>),
    #[error("num_actions {0} is not in 1..={MAX_ACTIONS}: declare the game's action count with the shape")]
    BadActionCount(u32),
    #[error("transition {index}: action {action} is not below the stream's {num_actions} actions: send the action the agent took")]
    BadAction {
        index: usize,
        action: u32,
        num_actions: u32,
    },
    #[error("the replay server's frame windows hold {used} of their {limit} bytes: try again later, or start the server with a larger --stream-window-mb")]
    WindowBudget { used: usize, limit: usize },
    #[error("codec {0} is unknown: use none, lz4 or zstd")]
    UnknownCodec(i32),
    #[error("frame id {got} is out of order: this stream's next frame is {expected}")]
    FrameOrder { got: u64, expected: u64 },
    #[error(transparent)]
    Frame(#[from] CodecError),
    #[error(
        "transition {index}: {field} names {got} frames but observations have {channels} channels"
    )]
    ChannelCount {
        index: usize,
        field: &'static str,
        got: usize,
        channels: usize,
    },
    #[error("transition {index}: frame {id} is unknown to this stream (it holds frames {first}..{end}); send frames before the transitions that use them, and refer only to the last {window}")]
    UnknownFrame {
        index: usize,
        id: u64,
        first: u64,
        end: u64,
        window: u64,
    },
    #[error("transition {index}: priority {priority} is not a number in [0, {max}]: send |TD error|, or 0 for the replay's largest", max = crate::MAX_PRIORITY)]
    BadPriority { index: usize, priority: f32 },
    #[error("transition {index}: reward {reward} is not a finite number: send the (clipped) reward the environment gave")]
    BadReward { index: usize, reward: f32 },
    #[error("transition {index}: discount {discount} is not in [0, 1]: send gamma^n, or 0 at a terminal")]
    BadDiscount { index: usize, discount: f32 },
}

/// Bounds on a declared layout, far above any Atari or classic-control game,
/// so a request cannot make the server allocate without limit.
pub use apex_proto::{MAX_CHANNELS, MAX_FRAME_BYTES};
pub const MAX_ACTIONS: u32 = 1024;
/// Frame ids stay far from overflowing.
const MAX_FRAME_ID: u64 = 1 << 62;

/// The bytes all insert streams' frame windows may hold together: each
/// stream pins up to STREAM_FRAME_WINDOW frames, so many streams of
/// incompressible frames could otherwise take all memory.
#[derive(Debug)]
pub struct WindowBudget {
    limit: usize,
    used: AtomicUsize,
}

impl WindowBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(WindowBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, bytes: usize) -> Result<(), StreamError> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.limit {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(StreamError::WindowBudget {
                used: before,
                limit: self.limit,
            });
        }
        Ok(())
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The frames an insert stream may still refer to.
pub struct StreamFrames {
    /// The stream's frame number of `window[0]`.
    first: u64,
    window: VecDeque<Frame>,
    /// Bytes of `window`, charged to `budget`.
    bytes: usize,
    budget: Arc<WindowBudget>,
    scratch: Vec<u8>,
}

impl Default for StreamFrames {
    /// A stream with no budget beyond its own window.
    fn default() -> Self {
        StreamFrames::new(WindowBudget::new(usize::MAX / 2))
    }
}

impl Drop for StreamFrames {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl StreamFrames {
    pub fn new(budget: Arc<WindowBudget>) -> Self {
        StreamFrames {
            first: 0,
            window: VecDeque::new(),
            bytes: 0,
            budget,
            scratch: Vec::new(),
        }
    }

    fn end(&self) -> u64 {
        self.first + self.window.len() as u64
    }

    /// The request's layout, as the store will check it against its own.
    pub fn layout(req: &InsertRequest) -> Result<Layout, StreamError> {
        let shape = req.obs_shape.as_ref().ok_or(StreamError::NoShape)?.dims();
        let frame_bytes = shape
            .get(1..)
            .and_then(|rest| rest.iter().try_fold(1usize, |a, &d| a.checked_mul(d)));
        if !(2..=4).contains(&shape.len())
            || shape.contains(&0)
            || shape[0] > MAX_CHANNELS
            || frame_bytes.is_none_or(|b| b > MAX_FRAME_BYTES)
        {
            return Err(StreamError::BadShape(shape));
        }
        let codec = Codec::try_from(req.codec).map_err(|_| StreamError::UnknownCodec(req.codec))?;
        if !(1..=MAX_ACTIONS).contains(&req.num_actions) {
            return Err(StreamError::BadActionCount(req.num_actions));
        }
        Ok(Layout {
            shape,
            codec,
            num_actions: req.num_actions,
        })
    }

    /// Checks `req` whole, then keeps its frames and returns its items.
    pub fn accept(
        &mut self,
        req: &InsertRequest,
        layout: &Layout,
        ledger: &Arc<Ledger>,
    ) -> Result<Vec<NewItem>, StreamError> {
        let frame_size = layout.frame_size();
        self.scratch.resize(frame_size, 0);
        // A stream's numbering starts where its first frames say: a sender
        // back after a lost connection restates its window from there on.
        if self.window.is_empty() {
            if let Some(f) = req.frames.first() {
                if f.id > MAX_FRAME_ID {
                    return Err(StreamError::FrameOrder {
                        got: f.id,
                        expected: 0,
                    });
                }
                self.first = f.id;
            }
        }
        let mut expected = self.end();
        // Frames the stream already holds come again with a resent batch.
        let fresh = req.frames.partition_point(|f| f.id < expected);
        for (index, f) in req.frames.iter().enumerate().skip(fresh) {
            if f.id != expected {
                return Err(StreamError::FrameOrder {
                    got: f.id,
                    expected,
                });
            }
            layout
                .codec
                .decode_into(index, &f.data, &mut self.scratch)?;
            expected += 1;
        }
        let end = expected;
        // The oldest frame still referable once this request's frames are in.
        let first = end.saturating_sub(STREAM_FRAME_WINDOW).max(self.first);
        let channels = layout.channels();
        for (index, t) in req.transitions.iter().enumerate() {
            for (field, ids) in [("obs", &t.obs), ("next_obs", &t.next_obs)] {
                if ids.len() != channels {
                    return Err(StreamError::ChannelCount {
                        index,
                        field,
                        got: ids.len(),
                        channels,
                    });
                }
                if let Some(&id) = ids.iter().find(|&&id| !(first..end).contains(&id)) {
                    return Err(StreamError::UnknownFrame {
                        index,
                        id,
                        first,
                        end,
                        window: STREAM_FRAME_WINDOW,
                    });
                }
            }
            if !crate::valid_priority(t.priority) {
                return Err(StreamError::BadPriority {
                    index,
                    priority: t.priority,
                });
            }
            if !t.reward.is_finite() {
                return Err(StreamError::BadReward {
                    index,
                    reward: t.reward,
                });
            }
            // NaN fails the range check too.
            if !(0.0..=1.0).contains(&t.discount) {
                return Err(StreamError::BadDiscount {
                    index,
                    discount: t.discount,
                });
            }
            if t.action >= layout.num_actions {
                return Err(StreamError::BadAction {
                    index,
                    action: t.action,
                    num_actions: layout.num_actions,
                });
            }
        }
        let fresh = &req.frames[fresh..];
        let added: usize = fresh.iter().map(|f| f.data.len()).sum();
        self.budget.reserve(added)?;
        self.bytes += added;
        // Everything checked: keep the frames, build the items, forget the oldest.
        self.window
            .extend(fresh.iter().map(|f| new_frame(&f.data, ledger)));
        let items = req
            .transitions
            .iter()
            .map(|t| NewItem {
                item: Item {
                    frames: t
                        .obs
                        .iter()
                        .chain(&t.next_obs)
                        .map(|&id| self.window[(id - self.first) as usize].clone())
                        .collect(),
                    action: t.action,
                    reward: t.reward,
                    discount: t.discount,
                },
                priority: t.priority,
            })
            .collect();
        let mut released = 0;
        while self.first < first {
            if let Some(f) = self.window.pop_front() {
                released += f.bytes().len();
            }
            self.first += 1;
        }
        self.bytes -= released;
        self.budget.release(released);
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use apex_proto::v1::{Frame as WireFrame, Shape, Transition};

    use super::*;

    fn request(frames: std::ops::Range<u64>, transitions: Vec<Transition>) -> InsertRequest {
        InsertRequest {
            obs_shape: Some(Shape::of(&[2, 2, 2])),
            codec: Codec::Lz4 as i32,
            frames: frames
                .map(|id| WireFrame {
                    id,
                    data: Codec::Lz4.encode(&[id as u8; 4]).into(),
                })
                .collect(),
            transitions,
            actor_id: 0,
            num_actions: 4,
            ..Default::default()
        }
    }

    fn transition(obs: [u64; 2], next: [u64; 2]) -> Transition {
        Transition {
            obs: obs.to_vec(),
            next_obs: next.to_vec(),
            action: 1,
            reward: 0.5,
            discount: 0.99,
            priority: 1.0,
        }
    }

    fn frame_tags(item: &Item) -> Vec<u8> {
        item.frames
            .iter()
            .map(|f| {
                let mut out = [0u8; 4];
                Codec::Lz4.decode_into(0, f.bytes(), &mut out).unwrap();
                out[0]
            })
            .collect()
    }

    #[test]
    fn transitions_share_frames_across_requests() {
        let ledger = Arc::new(Ledger::default());
        let mut s = StreamFrames::default();
        let req = request(0..3, vec![transition([0, 1], [1, 2])]);
        let layout = StreamFrames::layout(&req).unwrap();
        let a = s.accept(&req, &layout, &ledger).unwrap();
        let req = request(3..4, vec![transition([1, 2], [2, 3])]);
        let b = s.accept(&req, &layout, &ledger).unwrap();
        assert_eq!(frame_tags(&a[0].item), vec![0, 1, 1, 2]);
        assert_eq!(frame_tags(&b[0].item), vec![1, 2, 2, 3]);
        assert!(
            Arc::ptr_eq(&a[0].item.frames[3], &b[0].item.frames[1]),
            "frame 2 is stored once"
        );
        assert_eq!(ledger.frames(), 4);
        drop(s);
        drop(a);
        assert_eq!(
            ledger.frames(),
            3,
            "frame 0 went with the last item holding it"
        );
    }

    #[test]
    fn bad_requests_are_refused_whole() {
        let ledger = Arc::new(Ledger::default());
        let mut s = StreamFrames::default();
        let ok = request(0..2, vec![]);
        let layout = StreamFrames::layout(&ok).unwrap();
        s.accept(&ok, &layout, &ledger).unwrap();
        let cases = [
            (
                request(3..4, vec![]),
                "frame id 3 is out of order: this stream's next frame is 2",
            ),
            (
                request(2..3, vec![transition([0, 1], [1, 5])]),
                "transition 0: frame 5 is unknown to this stream (it holds frames 0..3)",
            ),
            (
                request(
                    2..3,
                    vec![Transition {
                        obs: vec![0],
                        ..transition([0, 1], [1, 2])
                    }],
                ),
                "transition 0: obs names 1 frames but observations have 2 channels",
            ),
            (
                request(
                    2..3,
                    vec![Transition {
                        priority: f32::NAN,
                        ..transition([0, 1], [1, 2])
                    }],
                ),
                "priority NaN",
            ),
        ];
        let poison = |t: Transition, needle: &'static str| (request(2..3, vec![t]), needle);
        let good = transition([0, 1], [1, 2]);
        let cases = cases.into_iter().chain([
            poison(
                Transition {
                    priority: 1e30,
                    ..good.clone()
                },
                "priority 1000000000000000000000000000000 is not a number in [0, 1000000]",
            ),
            poison(
                Transition {
                    priority: -1.0,
                    ..good.clone()
                },
                "priority -1",
            ),
            poison(
                Transition {
                    reward: f32::NAN,
                    ..good.clone()
                },
                "reward NaN is not a finite number",
            ),
            poison(
                Transition {
                    reward: f32::INFINITY,
                    ..good.clone()
                },
                "reward inf",
            ),
            poison(
                Transition {
                    discount: f32::INFINITY,
                    ..good.clone()
                },
                "discount inf is not in [0, 1]",
            ),
            poison(
                Transition {
                    discount: f32::NAN,
                    ..good.clone()
                },
                "discount NaN",
            ),
            poison(
                Transition {
                    discount: -0.5,
                    ..good.clone()
                },
                "discount -0.5",
            ),
            poison(
                Transition {
                    action: 4_000_000_000,
                    ..good
                },
                "action 4000000000 is not below the stream's 4 actions",
            ),
        ]);
        for (req, needle) in cases {
            let e = s.accept(&req, &layout, &ledger).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let mut corrupt = request(2..3, vec![]);
        corrupt.frames[0].data = vec![9, 0, 0, 0, 1].into();
        assert!(matches!(
            s.accept(&corrupt, &layout, &ledger),
            Err(StreamError::Frame(_))
        ));
        assert_eq!(ledger.frames(), 2, "nothing of a refused request was kept");
        // The stream goes on where it was.
        s.accept(
            &request(2..3, vec![transition([0, 1], [1, 2])]),
            &layout,
            &ledger,
        )
        .unwrap();
        let mut bad_codec = request(3..4, vec![]);
        bad_codec.codec = 7;
        assert_eq!(
            StreamFrames::layout(&bad_codec).unwrap_err(),
            StreamError::UnknownCodec(7)
        );
    }

    #[test]
    fn frames_older_than_the_window_are_forgotten() {
        let ledger = Arc::new(Ledger::default());
        let mut s = StreamFrames::default();
        let n = STREAM_FRAME_WINDOW + 10;
        let req = request(0..n, vec![]);
        let layout = StreamFrames::layout(&req).unwrap();
        s.accept(&req, &layout, &ledger).unwrap();
        assert_eq!(ledger.frames() as u64, STREAM_FRAME_WINDOW);
        let e = s
            .accept(
                &request(n..n + 1, vec![transition([9, 10], [10, 11])]),
                &layout,
                &ledger,
            )
            .unwrap_err();
        assert!(matches!(e, StreamError::UnknownFrame { id: 9, .. }), "{e}");
    }

    #[test]
    fn layouts_are_bounded_and_declare_their_actions() {
        let with = |dims: &[usize], actions: u32| InsertRequest {
            obs_shape: Some(Shape::of(dims)),
            num_actions: actions,
            ..request(0..0, vec![])
        };
        assert!(StreamFrames::layout(&with(&[4, 84, 84], 18)).is_ok());
        for dims in [
            &[1, 1 << 31, 1 << 31][..],
            &[4][..],
            &[4, 0, 84][..],
            &[65, 84, 84][..],
            &[1, 2, 3, 4, 5][..],
            &[2, 4096, 4096][..],
        ] {
            let e = StreamFrames::layout(&with(dims, 4)).unwrap_err();
            assert!(matches!(e, StreamError::BadShape(_)), "{dims:?}: {e}");
        }
        for actions in [0, MAX_ACTIONS + 1] {
            let e = StreamFrames::layout(&with(&[4, 84, 84], actions)).unwrap_err();
            assert_eq!(e, StreamError::BadActionCount(actions));
            assert!(e.to_string().contains("declare the game's action count"));
        }
    }

    #[test]
    fn a_resumed_stream_restates_its_window_and_skips_frames_it_holds() {
        let ledger = Arc::new(Ledger::default());
        // The sender's first stream went; on the new one it restates frames
        // 100..103 (numbering goes on), then resends a batch with frame 102.
        let mut s = StreamFrames::default();
        let req = request(100..103, vec![]);
        let layout = StreamFrames::layout(&req).unwrap();
        s.accept(&req, &layout, &ledger).unwrap();
        let resent = request(102..104, vec![transition([100, 101], [102, 103])]);
        let items = s.accept(&resent, &layout, &ledger).unwrap();
        assert_eq!(frame_tags(&items[0].item), vec![100, 101, 102, 103]);
        assert_eq!(ledger.frames(), 4, "frame 102 is held once");
        let e = s.accept(&request(105..106, vec![]), &layout, &ledger);
        assert_eq!(
            e.unwrap_err(),
            StreamError::FrameOrder {
                got: 105,
                expected: 104
            }
        );
    }

    #[test]
    fn frame_windows_share_one_memory_budget() {
        let ledger = Arc::new(Ledger::default());
        let one = Codec::Lz4.encode(&[0u8; 4]).len();
        let budget = WindowBudget::new(3 * one);
        let mut a = StreamFrames::new(budget.clone());
        let mut b = StreamFrames::new(budget.clone());
        let req = request(0..2, vec![]);
        let layout = StreamFrames::layout(&req).unwrap();
        a.accept(&req, &layout, &ledger).unwrap();
        let e = b.accept(&req, &layout, &ledger).unwrap_err();
        assert!(matches!(e, StreamError::WindowBudget { .. }), "{e}");
        assert_eq!(budget.used(), 2 * one, "a refused request charges nothing");
        drop(a);
        assert_eq!(budget.used(), 0, "a closed stream returns its share");
        b.accept(&req, &layout, &ledger).unwrap();
    }

    #[test]
    fn a_screen_unchanged_for_longer_than_the_window_stays_insertable() {
        // Two environments on one stream, as an actor has them: one screen
        // never changes (Breakout waiting for FIRE), the other moves every
        // step, so the still frame's first id falls out of the window.
        use apex_proto::frame_stream::FrameStream;
        let ledger = Arc::new(Ledger::default());
        let mut server = StreamFrames::default();
        let mut actor = FrameStream::new(Codec::Lz4, 2);
        let obs = |v: u8| bytes::Bytes::from(vec![v; 8]);
        let mut still = actor.name(None, obs(7));
        let mut moving = actor.name(None, obs(0));
        let layout = StreamFrames::layout(&request(0..0, vec![])).unwrap();
        for step in 1..=2 * STREAM_FRAME_WINDOW {
            let next_still = actor.name(Some(&still), obs(7));
            let next_moving = actor.name(Some(&moving), obs((step % 251) as u8));
            let transitions = [(&still, &next_still), (&moving, &next_moving)]
                .into_iter()
                .map(|(a, b)| Transition {
                    obs: a.ids.clone(),
                    next_obs: b.ids.clone(),
                    ..transition([0, 0], [0, 0])
                })
                .collect();
            let req = InsertRequest {
                frames: actor.take_frames(),
                transitions,
                ..request(0..0, vec![])
            };
            let items = server
                .accept(&req, &layout, &ledger)
                .unwrap_or_else(|e| panic!("step {step}: {e}"));
            assert_eq!(frame_tags(&items[0].item), vec![7; 4]);
            (still, moving) = (next_still, next_moving);
        }
    }
}
