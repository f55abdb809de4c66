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
            taps.push(Tap {
                dst: d,
                src: first - 1,
                weight,
            });
        }
        for s in first..last {
            taps.push(Tap {
                dst: d,
                src: s,
                weight: (1.0 / cell) as f32,
            });
        }
        if end - last as f64 > 1e-3 {
            let weight = ((end - last as f64).min(1.0).min(cell) / cell) as f32;
            taps.push(Tap {
                dst: d,
                src: last,
                weight,
            });
        }
    }
    taps
}

/// The taps of one axis grouped by destination pixel and padded to the same
/// count with zero weights (adding `x * 0.0` leaves a sum unchanged, so the
/// padding keeps OpenCV's arithmetic exact).
#[derive(Debug, Clone)]
struct Kernel {
    width: usize,
    src: Vec<usize>,
    weight: Vec<f32>,
}

impl Kernel {
    fn new(src_len: usize, dst_len: usize) -> Self {
        let taps = taps(src_len, dst_len);
        let per_dst: Vec<Vec<Tap>> = (0..dst_len)
            .map(|d| taps.iter().filter(|t| t.dst == d).copied().collect())
            .collect();
        let width = per_dst.iter().map(Vec::len).max().unwrap_or(1);
        let mut src = Vec::with_capacity(dst_len * width);
        let mut weight = Vec::with_capacity(dst_len * width);
        for mine in &per_dst {
            for j in 0..width {
                let tap = mine.get(j).copied().unwrap_or(Tap {
                    weight: 0.0,
                    ..mine[0]
                });
                src.push(tap.src);
                weight.push(tap.weight);
            }
        }
        Kernel { width, src, weight }
    }

    /// Source indices and weights of destination pixel `d`, in OpenCV's order.
    fn of(&self, d: usize) -> (&[usize], &[f32]) {
        let range = d * self.width..(d + 1) * self.width;
        (&self.src[range.clone()], &self.weight[range])
    }

    /// The same taps stored tap-major: tap `j` of every destination pixel.
    fn transposed(&self) -> (Vec<u32>, Vec<f32>) {
        let n = self.src.len() / self.width;
        let mut src = Vec::with_capacity(self.src.len());
        let mut weight = Vec::with_capacity(self.src.len());
        for j in 0..self.width {
            for d in 0..n {
                src.push(self.src[d * self.width + j] as u32);
                weight.push(self.weight[d * self.width + j]);
            }
        }
        (src, weight)
    }
}

/// Precomputed weights for resizing `src_h x src_w` to `dst_h x dst_w`.
#[derive(Debug, Clone)]
pub struct AreaResize {
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
    rows: Kernel,
    /// Every source row resized horizontally, `src_h x dst_w`.
    scratch: Vec<f32>,
    /// One destination row before rounding.
    row_sum: Vec<f32>,
    /// The column taps tap-major, so each tap is one gather then one
    /// vectorizable multiply-add over the whole destination row.
    col_src: Vec<u32>,
    col_weight: Vec<f32>,
    /// One source row as f32, converted in one vectorized pass.
    line: Vec<f32>,
    /// One tap's source pixels for a destination row.
    gathered: Vec<f32>,
}

impl AreaResize {
    /// Downscaling only (the area method is defined for shrinking).
    pub fn new(src_h: usize, src_w: usize, dst_h: usize, dst_w: usize) -> Self {
        assert!(dst_h <= src_h && dst_w <= src_w && dst_h > 0 && dst_w > 0);
        let cols = Kernel::new(src_w, dst_w);
        let (col_src, col_weight) = cols.transposed();
        AreaResize {
            col_src,
            col_weight,
            gathered: vec![0.0; dst_w],
            line: vec![0.0; src_w],
            src_h,
            src_w,
            dst_h,
            dst_w,
            rows: Kernel::new(src_h, dst_h),
            scratch: vec![0.0; src_h * dst_w],
            row_sum: vec![0.0; dst_w],
        }
    }

    /// Resizes `src` (row-major `src_h x src_w`) into `dst` (`dst_h x dst_w`).
    pub fn apply(&mut self, src: &[u8], dst: &mut [u8]) {
        assert_eq!(src.len(), self.src_h * self.src_w, "source size");
        assert_eq!(dst.len(), self.dst_h * self.dst_w, "destination size");
        for (r, line) in src.chunks_exact(self.src_w).enumerate() {
            self.resize_row(r, line);
        }
        for (y, out) in dst.chunks_exact_mut(self.dst_w).enumerate() {
            self.finish_row(y, out);
        }
    }

    /// The horizontal pass of source row `r`, kept for [`AreaResize::update`].
    pub fn resize_row(&mut self, r: usize, line: &[u8]) {
        assert_eq!(line.len(), self.src_w, "source row size");
        let w = self.dst_w;
        let out = &mut self.scratch[r * w..(r + 1) * w];
        for (f, &v) in self.line.iter_mut().zip(line) {
            *f = v as f32;
        }
        out.fill(0.0);
        for (idx, wt) in self
            .col_src
            .chunks_exact(w)
            .zip(self.col_weight.chunks_exact(w))
        {
            for (g, &i) in self.gathered.iter_mut().zip(idx) {
                *g = self.line[i as usize];
            }
            for ((o, &g), &a) in out.iter_mut().zip(&self.gathered).zip(wt) {
                *o += g * a;
            }
        }
    }

    /// Recomputes the destination rows that read a source row flagged in
    /// `changed`, from the rows last given to [`AreaResize::resize_row`];
    /// the other rows of `dst` keep what an earlier pass wrote there.
    pub fn update(&mut self, changed: &[bool], dst: &mut [u8]) {
        assert_eq!(changed.len(), self.src_h, "one flag per source row");
        assert_eq!(dst.len(), self.dst_h * self.dst_w, "destination size");
        for (y, out) in dst.chunks_exact_mut(self.dst_w).enumerate() {
            if self.rows.of(y).0.iter().any(|&r| changed[r]) {
                self.finish_row(y, out);
            }
        }
    }

    /// The vertical pass of destination row `y`.
    fn finish_row(&mut self, y: usize, out: &mut [u8]) {
        let w = self.dst_w;
        let sum = &mut self.row_sum;
        let (idx, wt) = self.rows.of(y);
        for (j, (&r, &b)) in idx.iter().zip(wt).enumerate() {
            let row = &self.scratch[r * w..(r + 1) * w];
            if j == 0 {
                for (s, &h) in sum.iter_mut().zip(row) {
                    *s = b * h;
                }
            } else {
                for (s, &h) in sum.iter_mut().zip(row) {
                    *s += b * h;
                }
            }
        }
        for (o, &s) in out.iter_mut().zip(sum.iter()) {
            *o = round_to_u8(s);
        }
    }
}

/// Rounds half to even, as OpenCV's `saturate_cast<uchar>(float)` does.
/// Adding and subtracting 2^23 rounds in the FPU's default mode for
/// 0 <= x < 2^22 and, unlike `round_ties_even`, needs no libm call on
/// baseline x86-64.
#[inline]
fn round_to_u8(x: f32) -> u8 {
    const MAGIC: f32 = 8_388_608.0;
    let r = (x.clamp(0.0, 255.0) + MAGIC) - MAGIC;
    r as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even_and_saturating() {
        for (x, want) in [
            (0.5f32, 0u8),
            (1.5, 2),
            (2.5, 2),
            (2.4999, 2),
            (2.5001, 3),
            (254.5, 254),
            (255.4, 255),
            (300.0, 255),
            (-3.0, 0),
        ] {
            assert_eq!(round_to_u8(x), want, "{x}");
        }
    }

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
        let mut r = AreaResize::new(210, 160, 84, 84);
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
    fn updating_changed_rows_gives_the_full_resize() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (h, w) = (210, 160);
        let mut src: Vec<u8> = (0..h * w).map(|_| rng.gen()).collect();
        let mut incremental = AreaResize::new(h, w, 84, 84);
        let mut out = vec![0; 84 * 84];
        incremental.apply(&src, &mut out);
        for round in 0..20 {
            let mut changed = vec![false; h];
            for _ in 0..rng.gen_range(0..12) {
                let r = rng.gen_range(0..h);
                changed[r] = true;
                for p in &mut src[r * w..(r + 1) * w] {
                    *p = rng.gen();
                }
            }
            for r in (0..h).filter(|&r| changed[r]) {
                incremental.resize_row(r, &src[r * w..(r + 1) * w]);
            }
            incremental.update(&changed, &mut out);
            let mut want = vec![0; 84 * 84];
            AreaResize::new(h, w, 84, 84).apply(&src, &mut want);
            assert_eq!(out, want, "round {round}");
        }
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
