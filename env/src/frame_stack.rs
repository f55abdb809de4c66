//! The last K preprocessed frames, oldest first, as one contiguous slice
//! ready to become a `[K, H, W]` network input.

/// A ring of K slots kept twice over: each frame is written at slot `i` and
/// `i + K`, so the newest K frames always lie contiguous, oldest first, and
/// a push writes two frames instead of shifting K.
#[derive(Debug, Clone)]
pub struct FrameStack {
    frame_len: usize,
    depth: usize,
    data: Vec<u8>,
    /// Slot of the oldest frame.
    start: usize,
}

impl FrameStack {
    pub fn new(depth: usize, frame_len: usize) -> Self {
        assert!(depth > 0 && frame_len > 0);
        FrameStack {
            frame_len,
            depth,
            data: vec![0; 2 * depth * frame_len],
            start: 0,
        }
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Starts a new episode: every slot holds `frame`, as DeepMind's and
    /// gymnasium's stacks do, so the first observation is not mostly black.
    pub fn fill(&mut self, frame: &[u8]) {
        assert_eq!(frame.len(), self.frame_len);
        for slot in self.data.chunks_exact_mut(self.frame_len) {
            slot.copy_from_slice(frame);
        }
    }

    /// Drops the oldest frame and appends `frame` as the newest.
    pub fn push(&mut self, frame: &[u8]) {
        assert_eq!(frame.len(), self.frame_len);
        let n = self.frame_len;
        for slot in [self.start, self.start + self.depth] {
            self.data[slot * n..(slot + 1) * n].copy_from_slice(frame);
        }
        self.start = (self.start + 1) % self.depth;
    }

    /// All frames, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        let n = self.frame_len;
        &self.data[self.start * n..(self.start + self.depth) * n]
    }

    pub fn newest(&self) -> &[u8] {
        let s = self.as_slice();
        &s[s.len() - self.frame_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_push_keeps_order_oldest_first() {
        let mut s = FrameStack::new(4, 2);
        s.fill(&[1, 1]);
        assert_eq!(s.as_slice(), &[1, 1, 1, 1, 1, 1, 1, 1]);
        s.push(&[2, 2]);
        s.push(&[3, 4]);
        assert_eq!(s.as_slice(), &[1, 1, 1, 1, 2, 2, 3, 4]);
        assert_eq!(s.newest(), &[3, 4]);
        for v in 5..=8 {
            s.push(&[v, v]);
        }
        assert_eq!(s.as_slice(), &[5, 5, 6, 6, 7, 7, 8, 8]);
        assert_eq!(s.depth(), 4);
    }

    #[test]
    fn matches_a_shifted_window_over_many_pushes_and_refills() {
        for depth in 1..=5 {
            let mut s = FrameStack::new(depth, 3);
            let mut window = vec![[0u8; 3]; depth];
            for v in 0..40u8 {
                let frame = [v, v.wrapping_mul(7), 255 - v];
                if v % 13 == 0 {
                    s.fill(&frame);
                    window = vec![frame; depth];
                } else {
                    s.push(&frame);
                    window.remove(0);
                    window.push(frame);
                }
                assert_eq!(s.as_slice(), window.concat(), "depth {depth}, frame {v}");
                assert_eq!(s.newest(), frame);
            }
        }
    }
}
