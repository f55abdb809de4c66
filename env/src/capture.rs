//! What an agent step keeps of its emulator frames: the last two screens,
//! grey, max-pooled and area-resized, with the buffer semantics of
//! gymnasium's `AtariPreprocessing` (two grey buffers, pooled in place into
//! the last frame's, so a step cut short pools the stale screens it holds).
//!
//! The work starts from palette-index screens, which ALE hands over with a
//! memcpy, rather than ALE's grey screens, which it converts pixel by pixel
//! for every capture. The grey lookup, the max and the horizontal resize run
//! together, once per step, and only for the screen rows that differ from
//! the previous step's pair (most of an Atari screen stands still from one
//! step to the next); the vertical pass rewrites only the output rows those
//! rows feed. Unchanged rows keep results computed from identical inputs by
//! the same arithmetic, so frames stay bit-identical to a full recompute.

use crate::emulator::Emulator;
use crate::palette::GreyPalette;
use crate::resize::AreaResize;

/// gymnasium's buffer index: the step's last frame, or the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Last = 0,
    BeforeLast = 1,
}

pub(crate) struct Capture {
    palette: GreyPalette,
    resize: AreaResize,
    width: usize,
    /// The index screens behind gymnasium's buffers after the last `finish`
    /// (buffer 0 is then their pool, or `pooled` when not `pair`).
    shown: [Vec<u8>; 2],
    /// This step's captures, by slot, until `finish`.
    captured: [Vec<u8>; 2],
    fresh: [bool; 2],
    /// Rows of `captured[s]` that differ from `shown[s]`.
    changed: [Vec<bool>; 2],
    /// `shown[s]` holds learnt indices only (not so before its first capture).
    learnt: [bool; 2],
    /// Buffer 0 is the pool of `shown`, and the resize holds its rows.
    pair: bool,
    /// Buffer 1 is black, as after a reset's no-ops.
    black: bool,
    /// Buffer 0 when not `pair`.
    pooled: Vec<u8>,
    dirty: Vec<bool>,
    row: Vec<u8>,
    /// A grey screen, from ALE when learning or the palette when pooling.
    grey: Vec<u8>,
}

impl Capture {
    /// Screens of `height x width` resized to `out_h x out_w`.
    pub fn new(height: usize, width: usize, out_h: usize, out_w: usize) -> Self {
        let pixels = height * width;
        Capture {
            palette: GreyPalette::new(),
            resize: AreaResize::new(height, width, out_h, out_w),
            width,
            shown: [vec![0; pixels], vec![0; pixels]],
            captured: [vec![0; pixels], vec![0; pixels]],
            fresh: [false; 2],
            changed: [vec![true; height], vec![true; height]],
            learnt: [false; 2],
            pair: false,
            black: true,
            pooled: vec![0; pixels],
            dirty: vec![true; height],
            row: vec![0; width],
            grey: vec![0; pixels],
        }
    }

    /// Takes the emulator's current screen into `slot` for this step.
    pub fn capture<E: Emulator>(&mut self, slot: Slot, emu: &E) {
        let s = slot as usize;
        let screen = &mut self.captured[s];
        emu.screen(screen);
        let mut unknown = false;
        for ((new, old), changed) in screen
            .chunks_exact(self.width)
            .zip(self.shown[s].chunks_exact(self.width))
            .zip(self.changed[s].iter_mut())
        {
            *changed = !self.learnt[s] || differ(new, old);
            // Unchanged rows hold indices learnt when they were captured.
            unknown |= *changed && !self.palette.knows(new);
        }
        if unknown {
            // The frame is still on the emulator: learn its colours now,
            // since they are looked up only when the step ends.
            emu.grayscale(&mut self.grey);
            self.palette.learn(screen, &self.grey);
        }
        self.fresh[s] = true;
    }

    /// gymnasium's buffers after a reset's no-ops: the current screen in
    /// buffer 0, black in buffer 1. Call [`Capture::render`] to resize it.
    pub fn restart<E: Emulator>(&mut self, emu: &E) {
        self.capture(Slot::Last, emu);
        self.keep(Slot::Last);
        self.palette.grey_into(&self.shown[0], &mut self.pooled);
        self.pair = false;
        self.black = true;
        self.fresh = [false; 2];
    }

    /// Resizes buffer 0 into `out`, after [`Capture::restart`].
    pub fn render(&mut self, out: &mut [u8]) {
        assert!(!self.pair, "render follows a restart");
        self.resize.apply(&self.pooled, out);
    }

    /// Pools this step's buffers into buffer 0 and resizes it into `out`,
    /// which must hold the previous step's frame.
    pub fn finish(&mut self, out: &mut [u8]) {
        if self.fresh == [true, true] {
            self.finish_pair(out);
        } else {
            self.finish_stale(out);
        }
        self.fresh = [false; 2];
    }

    /// Both buffers were captured this step: the pool depends on them alone.
    fn finish_pair(&mut self, out: &mut [u8]) {
        let w = self.width;
        let [last, before] = &self.captured;
        for (r, dirty) in self.dirty.iter_mut().enumerate() {
            *dirty = !self.pair || self.changed[0][r] || self.changed[1][r];
            if *dirty {
                let span = r * w..(r + 1) * w;
                self.palette
                    .grey_max_into(&last[span.clone()], &before[span], &mut self.row);
                self.resize.resize_row(r, &self.row);
            }
        }
        self.resize.update(&self.dirty, out);
        self.keep(Slot::Last);
        self.keep(Slot::BeforeLast);
        self.pair = true;
        self.black = false;
    }

    /// A step cut short (or a frame skip of 1): gymnasium pools whatever
    /// its buffers hold, some of it from earlier steps. Rare, so computed
    /// in full.
    fn finish_stale(&mut self, out: &mut [u8]) {
        if self.pair {
            let [last, before] = &self.shown;
            self.palette.grey_max_into(last, before, &mut self.pooled);
        }
        if self.fresh[1] {
            self.keep(Slot::BeforeLast);
            self.black = false;
        }
        if self.fresh[0] {
            self.keep(Slot::Last);
            self.palette.grey_into(&self.shown[0], &mut self.pooled);
        }
        if !self.black {
            self.palette.grey_into(&self.shown[1], &mut self.grey);
            max_pool(&mut self.pooled, &self.grey);
        }
        self.pair = false;
        self.resize.apply(&self.pooled, out);
    }

    /// Makes this step's capture in `slot` the shown one.
    fn keep(&mut self, slot: Slot) {
        let s = slot as usize;
        std::mem::swap(&mut self.captured[s], &mut self.shown[s]);
        self.learnt[s] = true;
    }
}

/// Whether two rows differ: eight bytes at a time, inline, where a slice
/// comparison would call memcmp for every row of every capture.
#[inline]
fn differ(a: &[u8], b: &[u8]) -> bool {
    assert_eq!(a.len(), b.len());
    let mut diff = 0;
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_differ = a8.remainder() != b8.remainder();
    for (x, y) in a8.zip(b8) {
        diff |= u64::from_ne_bytes(x.try_into().expect("8 bytes"))
            ^ u64::from_ne_bytes(y.try_into().expect("8 bytes"));
    }
    diff != 0 || tails_differ
}

/// Per-pixel maximum of two frames, into the first: removes the flicker of
/// sprites that Atari games draw on alternate frames.
pub(crate) fn max_pool(into: &mut [u8], other: &[u8]) {
    assert_eq!(into.len(), other.len());
    for (a, &b) in into.iter_mut().zip(other) {
        *a = (*a).max(b);
    }
}

#[cfg(test)]
mod tests;
