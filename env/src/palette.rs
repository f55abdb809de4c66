//! ALE's grey level of each palette index, learnt from the emulator itself.
//!
//! ALE turns its screen of palette indices into grey levels with a table
//! that depends on the ROM's TV format (NTSC, PAL or SECAM, detected when
//! the ROM loads), and its C API does not expose which. An index screen and
//! ALE's grey screen of the same frame give the entry of every index on it,
//! so a table learnt from such pairs is ALE's own, whatever the format.

#[derive(Debug, Clone)]
pub(crate) struct GreyPalette {
    grey: [u8; 256],
    /// 1 for an index not learnt yet, so one OR over a row tells.
    unknown: [u8; 256],
}

impl GreyPalette {
    pub fn new() -> Self {
        GreyPalette {
            grey: [0; 256],
            unknown: [1; 256],
        }
    }

    /// Whether every index in `indices` has been learnt.
    pub fn knows(&self, indices: &[u8]) -> bool {
        indices
            .iter()
            .fold(0, |acc, &i| acc | self.unknown[i as usize])
            == 0
    }

    /// Learns from an index screen and ALE's grey screen of the same frame.
    pub fn learn(&mut self, indices: &[u8], grey: &[u8]) {
        assert_eq!(indices.len(), grey.len());
        for (&i, &g) in indices.iter().zip(grey) {
            self.grey[i as usize] = g;
            self.unknown[i as usize] = 0;
        }
    }

    #[inline]
    pub fn grey(&self, index: u8) -> u8 {
        debug_assert_eq!(self.unknown[index as usize], 0, "index {index} not learnt");
        self.grey[index as usize]
    }

    pub fn grey_into(&self, indices: &[u8], out: &mut [u8]) {
        assert_eq!(indices.len(), out.len());
        for (o, &i) in out.iter_mut().zip(indices) {
            *o = self.grey(i);
        }
    }

    /// The brighter of two index rows' grey levels, pixel by pixel.
    #[inline]
    pub fn grey_max_into(&self, a: &[u8], b: &[u8], out: &mut [u8]) {
        assert!(a.len() == out.len() && b.len() == out.len());
        for ((o, &i), &j) in out.iter_mut().zip(a).zip(b) {
            *o = self.grey[i as usize].max(self.grey[j as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_only_the_indices_it_was_shown() {
        let mut p = GreyPalette::new();
        assert!(p.knows(&[]));
        assert!(!p.knows(&[0]));
        p.learn(&[0, 14, 14, 200], &[0, 236, 236, 90]);
        assert!(p.knows(&[14, 0, 200, 14]));
        assert!(!p.knows(&[14, 2, 0]));
        let mut out = [9; 3];
        p.grey_into(&[200, 0, 14], &mut out);
        assert_eq!(out, [90, 0, 236]);
        p.grey_max_into(&[200, 14, 0], &[14, 200, 0], &mut out);
        assert_eq!(out, [236, 236, 0]);
    }
}
