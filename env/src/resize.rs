//! Area-interpolated downscaling of a grayscale image, computed the way
//! OpenCV's `cv2.resize(..., interpolation=INTER_AREA)` computes it for a
//! non-integer scale (f32 weights, horizontal pass then weighted row sums,
//! round half to even). gymnasium's `AtariPreprocessing` and SB3's
//! `WarpFrame` use that call, so matching its arithmetic makes our frames
//! identical to theirs rather than merely close.

/// One source pixel's share of one destination pixel along an axis.
#[derive(Debug, Clone, Copy)]
struct Tap {
    dst: usize,
    src: usize,
    weight: f32,
}

fn taps(src_len: usize, dst_len: usize) -> Vec<Tap> {
    // OpenCV derives the cell size from the inverse scale, in f64.
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    let mut taps = Vec::with_capacity(src_len * 2);
    for d in 0..dst_len {
        let start = d as f64 * scale;
        let end = start + scale;
        let cell = scale.min(src_len as f64 - start);
        let mut first = start.ceil() as usize;
        let last = (end.floor() as usize).min(src_len - 1);
        first = first.min(last);
        if first as f64 - start > 1e-3 {
            let weight = ((first as f64 - start) / cell) as f32;
            taps.push(Tap { dst: d, src: first - 1, weight });
        }
        for s in first..last {
            taps.push(Tap { dst: d, src: s, weight: (1.0 / cell) as f32 });
        }
        if end - last as f64 > 1e-3 {
            let weight = ((end - last as f64).min(1.0).min(cell) / cell) as f32;
            taps.push(Tap { dst: d, src: last, weight });
        }
    }
    taps
}

/// Precomputed weights for resizing `src_h x src_w` to `dst_h x dst_w`.
#[derive(Debug, Clone)]
pub struct AreaResize {
    src_w: usize,
    dst_w: usize,
    dst_h: usize,
    src_h: usize,
    cols: Vec<Tap>,
    rows: Vec<Tap>,
}

impl AreaResize {
    /// Downscaling only (the area method is defined for shrinking).
    pub fn new(src_h: usize, src_w: usize, dst_h: usize, dst_w: usize) -> Self {
        assert!(dst_h <= src_h && dst_w <= src_w && dst_h > 0 && dst_w > 0);
        AreaResize {
            src_w,
            dst_w,
            dst_h,
            src_h,
            cols: taps(src_w, dst_w),
            rows: taps(src_h, dst_h),
        }
    }

    /// Resizes `src` (row-major `src_h x src_w`) into `dst` (`dst_h x dst_w`).
    pub fn apply(&self, src: &[u8], dst: &mut [u8]) {
        assert_eq!(src.len(), self.src_h * self.src_w, "source size");
        assert_eq!(dst.len(), self.dst_h * self.dst_w, "destination size");
        let w = self.dst_w;
        let mut row = vec![0f32; w];
        let mut sum = vec![0f32; w];
        let mut current = self.rows[0].dst;
        for tap in &self.rows {
            let line = &src[tap.src * self.src_w..(tap.src + 1) * self.src_w];
            row.fill(0.0);
            for c in &self.cols {
                row[c.dst] += line[c.src] as f32 * c.weight;
            }
            if tap.dst != current {
                store(&sum, &mut dst[current * w..(current + 1) * w]);
                for (s, r) in sum.iter_mut().zip(&row) {
                    *s = tap.weight * r;
                }
                current = tap.dst;
            } else {
                for (s, r) in sum.iter_mut().zip(&row) {
                    *s += tap.weight * r;
                }
            }
        }
        store(&sum, &mut dst[current * w..(current + 1) * w]);
    }
}

fn store(sum: &[f32], out: &mut [u8]) {
    for (o, s) in out.iter_mut().zip(sum) {
        *o = s.round_ties_even().clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_destination_pixel_sum_to_one() {
        for (src, dst) in [(160, 84), (210, 84), (7, 3)] {
            let mut totals = vec![0f64; dst];
            for t in taps(src, dst) {
                totals[t.dst] += t.weight as f64;
            }
            for total in totals {
                assert!((total - 1.0).abs() < 1e-5, "{src}->{dst}: {total}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let r = AreaResize::new(210, 160, 84, 84);
        for v in [0u8, 1, 77, 254, 255] {
            let src = vec![v; 210 * 160];
            let mut dst = vec![0; 84 * 84];
            r.apply(&src, &mut dst);
            assert!(dst.iter().all(|&d| d == v), "value {v}");
        }
    }

    #[test]
    fn integer_halving_averages_blocks() {
        // 4x4 -> 2x2 is a 2x2 block mean; 1,2,3,4 averages to 2.5 and rounds to even.
        let src = [1, 2, 10, 10, 3, 4, 10, 10, 0, 0, 255, 255, 0, 1, 255, 255];
        let mut dst = [0u8; 4];
        AreaResize::new(4, 4, 2, 2).apply(&src, &mut dst);
        assert_eq!(dst, [2, 10, 0, 255]);
    }

    #[test]
    fn fractional_cells_split_pixels_by_overlap() {
        // 3 -> 2: each output covers 1.5 inputs: (a + b/2) / 1.5 and (b/2 + c) / 1.5.
        let src = [30, 60, 90];
        let mut dst = [0u8; 2];
        AreaResize::new(1, 3, 1, 2).apply(&src, &mut dst);
        assert_eq!(dst, [40, 80]);
    }
}
