//! The last K preprocessed frames, oldest first, as one contiguous slice
//! ready to become a `[K, H, W]` network input.

#[derive(Debug, Clone)]
pub struct FrameStack {
    frame_len: usize,
    data: Vec<u8>,
}

impl FrameStack {
    pub fn new(depth: usize, frame_len: usize) -> Self {
        assert!(depth > 0 && frame_len > 0);
        FrameStack {
            frame_len,
            data: vec![0; depth * frame_len],
        }
    }

    pub fn depth(&self) -> usize {
        self.data.len() / self.frame_len
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
        let n = self.data.len();
        self.data.copy_within(self.frame_len.., 0);
        self.data[n - self.frame_len..].copy_from_slice(frame);
    }

    /// All frames, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    pub fn newest(&self) -> &[u8] {
        &self.data[self.data.len() - self.frame_len..]
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
}
