//! One pass over the memory of CPU tensors for an optimizer step. Written as
//! libtorch operations, Adam makes about fourteen passes over 3.3 million
//! floats per update (each operation reads and writes whole tensors far
//! larger than the caches); here every element is read once, updated with
//! the same float operations in the same order, and written once, split
//! into chunks over libtorch's intra-op thread count. Two things differ
//! from libtorch's operations, both in the last bits: the square root is
//! IEEE's correctly rounded one (MKL's is one ulp off for about 0.6% of
//! inputs), and subnormal floats count as zero (see `FlushSubnormals`).

use std::sync::atomic::{AtomicUsize, Ordering};

use tch::{Device, Kind, Tensor};

/// Elements per chunk: four float arrays of this length (1 MB) stay in L2.
const CHUNK: usize = 1 << 16;

/// Four tensors of one variable that a step reads and writes together:
/// the weights, their gradient and the optimizer's two running averages.
pub struct Quad<'a> {
    pub tensors: [&'a Tensor; 4],
}

/// The four arrays of one chunk of one variable.
pub struct Lanes<'a> {
    pub weights: &'a mut [f32],
    pub grad: &'a mut [f32],
    pub first: &'a mut [f32],
    pub second: &'a mut [f32],
}

/// The gradients that `vars` hold (undefined where a variable has none).
pub fn gradients(vars: &[Tensor]) -> Vec<Tensor> {
    vars.iter().map(Tensor::grad).collect()
}

/// The indices of the variables that have a gradient in `grads`: as in
/// torch, a variable without one skips its step.
pub fn stepped(grads: &[Tensor]) -> Vec<usize> {
    (0..grads.len()).filter(|&i| grads[i].defined()).collect()
}

/// The quads of the `stepped` variables from four parallel lists: weights,
/// gradients and the two running averages.
pub fn quads<'a>(stepped: &[usize], lists: [&'a [Tensor]; 4]) -> Vec<Quad<'a>> {
    stepped
        .iter()
        .map(|&i| Quad {
            tensors: lists.map(|l| &l[i]),
        })
        .collect()
}

impl<'a> Lanes<'a> {
    /// Each element's weight, gradient and two averages, in order.
    pub fn elements(self) -> impl Iterator<Item = (&'a mut f32, f32, &'a mut f32, &'a mut f32)> {
        self.weights
            .iter_mut()
            .zip(self.grad.iter())
            .zip(self.first.iter_mut())
            .zip(self.second.iter_mut())
            .map(|(((w, &g), a), b)| (w, g, a, b))
    }
}

/// A raw view of a tensor's floats; the tensor outlives every use of it
/// (see [`for_each_chunk`]).
#[derive(Clone, Copy)]
struct Raw {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: chunks of one array never overlap, and no two arrays share
// memory (`fits`), so threads never touch the same float.
unsafe impl Send for Raw {}
// SAFETY: as for Send: every thread writes only the chunks it took.
unsafe impl Sync for Raw {}

/// Whether every tensor is a dense float array in host memory, each quad's
/// four of one length, and no two arrays share any memory (each is handed
/// out as its own mutable slice): the layout this module's loops assume.
/// Other tensors (CUDA) take libtorch's operations instead.
pub fn fits(quads: &[Quad<'_>]) -> bool {
    let dense = quads.iter().all(|q| {
        let n = q.tensors[0].numel();
        q.tensors.iter().all(|t| {
            t.defined()
                && t.device() == Device::Cpu
                && t.kind() == Kind::Float
                && t.is_contiguous()
                && t.numel() == n
        })
    });
    dense && disjoint(quads)
}

/// [`fits`], with a warning (once per process) where CPU tensors do not
/// fit: their step then takes libtorch's operations, several times slower
/// and without subnormals flushed. (CUDA tensors never fit, by design.)
pub fn fits_or_warn(quads: &[Quad<'_>]) -> bool {
    let fits = fits(quads);
    if !fits && quads.iter().any(|q| q.tensors[0].device() == Device::Cpu) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "optimizer tensors are not dense host floats: the step falls back to libtorch operations, several times slower"
            )
        });
    }
    fits
}

/// No two non-empty arrays of any quads overlap in memory.
fn disjoint(quads: &[Quad<'_>]) -> bool {
    disjoint_tensors(quads.iter().flat_map(|q| q.tensors))
}

/// No two non-empty tensors' memory overlaps.
fn disjoint_tensors<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> bool {
    let mut ranges: Vec<(usize, usize)> = tensors
        .filter(|t| t.numel() > 0)
        .map(|t| {
            let start = t.data_ptr() as usize;
            (start, start + t.numel() * std::mem::size_of::<f32>())
        })
        .collect();
    ranges.sort_unstable();
    ranges.windows(2).all(|w| w[0].1 <= w[1].0)
}

/// Adds the gradients of `others` (lists like `sums`: one per variable,
/// undefined where `sums` is) into `sums` and returns the joint L2 norm of
/// the sums, in one pass over each chunk on up to `threads` threads: what
/// adding up the slices of a batch and clipping need. None, with nothing
/// added, unless all are dense host floats of matching lengths in
/// separate memory.
pub fn add_and_norm(sums: &[Tensor], others: &[Vec<Tensor>], threads: usize) -> Option<f64> {
    let dense = |t: &Tensor, n: usize| {
        t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() && t.numel() == n
    };
    let fits = others.iter().all(|o| o.len() == sums.len())
        && sums.iter().enumerate().all(|(v, s)| {
            others.iter().all(|o| o[v].defined() == s.defined())
                && (!s.defined()
                    || (dense(s, s.numel()) && others.iter().all(|o| dense(&o[v], s.numel()))))
        })
        && disjoint_tensors(
            sums.iter()
                .chain(others.iter().flatten())
                .filter(|t| t.defined()),
        );
    if !fits {
        return None;
    }
    let raw = |t: &Tensor| Raw {
        ptr: t.data_ptr() as *mut f32,
        len: t.numel(),
    };
    let arrays: Vec<(Raw, Vec<Raw>)> = (0..sums.len())
        .filter(|&v| sums[v].defined())
        .map(|v| (raw(&sums[v]), others.iter().map(|o| raw(&o[v])).collect()))
        .collect();
    let chunks: Vec<(usize, usize)> = arrays
        .iter()
        .enumerate()
        .flat_map(|(a, (r, _))| (0..r.len.div_ceil(CHUNK)).map(move |c| (a, c * CHUNK)))
        .collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut sum_sq = 0f64;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(a, start)) = chunks.get(i) else {
                return sum_sq;
            };
            let (sum, added) = &arrays[a];
            let len = CHUNK.min(sum.len - start);
            // SAFETY: `start..start + len` lies inside each array (same
            // lengths, checked above), each chunk is taken by one thread
            // only, no array overlaps another (checked), and the tensors
            // outlive this function.
            let sum = unsafe { std::slice::from_raw_parts_mut(sum.ptr.add(start), len) };
            for r in added {
                // SAFETY: as above; only read.
                let other = unsafe { std::slice::from_raw_parts(r.ptr.add(start), len) };
                for (s, o) in sum.iter_mut().zip(other) {
                    *s += o;
                }
            }
            sum_sq += squares(sum);
        }
    };
    let threads = threads.clamp(1, chunks.len().max(1));
    Some(
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mine = work();
            mine + helpers
                .into_iter()
                .map(|h| h.join().expect("adding gradients cannot panic"))
                .sum::<f64>()
        })
        .sqrt(),
    )
}

/// The sum of squares of `x`, in sixteen float lanes (so that it
/// vectorizes) added up in double.
fn squares(x: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let mut blocks = x.chunks_exact(16);
    for block in &mut blocks {
        for (l, v) in lanes.iter_mut().zip(block) {
            *l += v * v;
        }
    }
    let rest: f64 = blocks.remainder().iter().map(|&v| f64::from(v * v)).sum();
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + rest
}

/// Calls `step(variable index, lanes)` on every chunk of every quad, on up
/// to `threads` threads. The caller has checked [`fits`].
pub fn for_each_chunk<F>(quads: &[Quad<'_>], threads: usize, step: F)
where
    F: Fn(usize, Lanes<'_>) + Sync,
{
    assert!(fits(quads), "fused steps need dense host float tensors");
    let raws: Vec<[Raw; 4]> = quads
        .iter()
        .map(|q| {
            q.tensors.map(|t| Raw {
                ptr: t.data_ptr() as *mut f32,
                len: t.numel(),
            })
        })
        .collect();
    let chunks: Vec<(usize, usize)> = raws
        .iter()
        .enumerate()
        .flat_map(|(v, r)| (0..r[0].len.div_ceil(CHUNK)).map(move |c| (v, c * CHUNK)))
        .collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let _flush = FlushSubnormals::here();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(v, start)) = chunks.get(i) else {
                return;
            };
            let len = CHUNK.min(raws[v][0].len - start);
            // SAFETY: `start..start + len` lies inside each array (same lengths,
            // checked by `fits`), each chunk index is taken by one thread only,
            // and the tensors live until this function returns.
            let lane = |r: Raw| unsafe { std::slice::from_raw_parts_mut(r.ptr.add(start), len) };
            let [w, g, a, b] = raws[v];
            step(
                v,
                Lanes {
                    weights: lane(w),
                    grad: lane(g),
                    first: lane(a),
                    second: lane(b),
                },
            );
        }
    };
    let threads = threads.clamp(1, chunks.len().max(1));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(work);
        }
        work();
    });
}

/// Sets the x86 flags that treat subnormal floats as zero (FTZ and DAZ) on
/// this thread until dropped, as `torch.set_flush_denormal(True)` does.
/// In real training, Adam's second moments of rarely used weights and many
/// small gradients decay into the subnormal range, where each arithmetic
/// operation takes a microcode assist of about a hundred cycles: the
/// learner's optimizer step took five times as long as on random
/// gradients. A subnormal is below 1.2e-38; next to Adam's epsilon it is
/// zero. (Rust's compiler assumes the default floating-point environment
/// and may fold constants as if it held; all that differs here is whether
/// a subnormal counts as zero, which the step tolerates either way.)
struct FlushSubnormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushSubnormals {
    #[cfg(target_arch = "x86_64")]
    #[allow(deprecated)] // _mm_getcsr/_mm_setcsr: no stable replacement yet
    fn here() -> Self {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        const FTZ: u32 = 1 << 15;
        const DAZ: u32 = 1 << 6;
        // SAFETY: only the two flags change, on this thread, and drop restores them.
        let saved = unsafe { _mm_getcsr() };
        // SAFETY: as above.
        unsafe { _mm_setcsr(saved | FTZ | DAZ) };
        FlushSubnormals { saved }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn here() -> Self {
        FlushSubnormals {}
    }
}

impl Drop for FlushSubnormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        #[allow(deprecated)]
        // SAFETY: puts back what `here` found.
        unsafe {
            std::arch::x86_64::_mm_setcsr(self.saved)
        };
    }
}

/// Asserts that `got` is `want` but for the last bit of a few elements: the
/// fused step takes IEEE's correctly rounded square root, libtorch's CPU
/// `sqrt` (MKL's vsSqrt) is one ulp off for about 0.6% of its inputs.
#[cfg(test)]
pub(crate) fn assert_same_but_sqrt_rounding(got: &Tensor, want: &Tensor, what: &str) {
    let (got, want) = (
        Vec::<f32>::try_from(got.detach().flatten(0, -1)).expect("floats"),
        Vec::<f32>::try_from(want.detach().flatten(0, -1)).expect("floats"),
    );
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut differ = 0;
    for (g, w) in got.iter().zip(&want) {
        if g != w {
            differ += 1;
            let tolerance = 4.0 * f32::EPSILON * w.abs().max(1.0);
            assert!((g - w).abs() <= tolerance, "{what}: {g} against {w}");
        }
    }
    assert!(
        differ * 50 <= got.len(),
        "{what}: {differ} of {} elements differ, more than rounding explains",
        got.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_of_every_variable_is_visited_once() {
        let sizes = [1, CHUNK - 1, CHUNK, 3 * CHUNK + 7];
        let make = || -> Vec<Tensor> {
            sizes
                .iter()
                .map(|&n| Tensor::zeros([n as i64], (Kind::Float, Device::Cpu)))
                .collect()
        };
        let (w, g, a, b) = (make(), make(), make(), make());
        let quads: Vec<Quad> = (0..sizes.len())
            .map(|i| Quad {
                tensors: [&w[i], &g[i], &a[i], &b[i]],
            })
            .collect();
        for threads in [1, 2, 3] {
            for_each_chunk(&quads, threads, |v, l| {
                for x in l.weights.iter_mut() {
                    *x += 1.0 + v as f32;
                }
                for x in l.second.iter_mut() {
                    *x += 1.0;
                }
            });
        }
        for (i, &n) in sizes.iter().enumerate() {
            let want = 3.0 * (1.0 + i as f64) * n as f64;
            assert_eq!(w[i].sum(Kind::Double).double_value(&[]), want);
            assert_eq!(b[i].sum(Kind::Double).double_value(&[]), 3.0 * n as f64);
            assert_eq!(g[i].sum(Kind::Double).double_value(&[]), 0.0);
        }
    }

    #[test]
    fn strided_or_mismatched_tensors_do_not_fit() {
        let t = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
        let tr = t.tr();
        let short = Tensor::zeros([11], (Kind::Float, Device::Cpu));
        let double = Tensor::zeros([4, 3], (Kind::Double, Device::Cpu));
        assert!(fits(&[Quad {
            tensors: [&t, &t.copy(), &t.copy(), &t.copy()]
        }]));
        let halves = t.view([12]).split(6, 0);
        assert!(
            !fits(&[Quad {
                tensors: [
                    &halves[0],
                    &halves[1],
                    &t.copy().view([12]).narrow(0, 0, 6),
                    &t.view([12]).narrow(0, 3, 6)
                ]
            }]),
            "overlapping views of one storage"
        );
        let other = t.copy();
        assert!(
            !fits(&[
                Quad {
                    tensors: [&t, &t.copy(), &t.copy(), &t.copy()]
                },
                Quad {
                    tensors: [&other, &t, &t.copy(), &t.copy()]
                },
            ]),
            "one array in two quads"
        );
        for odd in [&tr, &short, &double, &t] {
            assert!(!fits(&[Quad {
                tensors: [&t, odd, &t, &t]
            }]));
        }
    }

    #[test]
    fn adding_slices_gradients_matches_libtorch_and_refuses_odd_tensors() {
        const FLOAT: (Kind, Device) = (Kind::Float, Device::Cpu);
        // Two variables, one longer than a chunk, one shorter than a lane
        // block; three slices; one to three threads.
        let lens = [CHUNK as i64 + 1000, 5];
        let grads = || -> Vec<Tensor> { lens.iter().map(|&n| Tensor::randn([n], FLOAT)).collect() };
        for threads in 1..=3 {
            let (sums, others) = (grads(), vec![grads(), grads()]);
            let want: Vec<Tensor> = (0..lens.len())
                .map(|v| &sums[v] + &others[0][v] + &others[1][v])
                .collect();
            let want_norm = Tensor::stack(&want.iter().map(Tensor::norm).collect::<Vec<_>>(), 0)
                .norm()
                .double_value(&[]);
            let norm = add_and_norm(&sums, &others, threads).expect("dense floats fit");
            assert!(
                (norm - want_norm).abs() <= 1e-5 * want_norm,
                "{norm} against {want_norm}"
            );
            for (got, want) in sums.iter().zip(&want) {
                let off = (got - want).abs().max().double_value(&[]);
                assert!(off <= 1e-6, "{threads} threads: sums off by {off}");
            }
        }
        let square = Tensor::randn([4, 4], FLOAT);
        let (sums, before) = (vec![square.tr()], square.copy());
        assert!(
            add_and_norm(&sums, &[vec![square.copy()]], 2).is_none(),
            "a strided view"
        );
        assert!(square.equal(&before), "nothing added to a refused tensor");
        let t = Tensor::randn([8], FLOAT);
        assert!(
            add_and_norm(&[t.shallow_clone()], &[vec![t.shallow_clone()]], 1).is_none(),
            "the same memory twice"
        );
        assert!(
            add_and_norm(&[t.copy()], &[vec![Tensor::randn([9], FLOAT)]], 1).is_none(),
            "lengths differ"
        );
    }
}
