//! Where a sampled batch's observations are decoded and how they reach the
//! training device. On the CPU they are decoded into the very tensors the
//! update reads. On CUDA they are decoded into page-locked (pinned) host
//! buffers kept in a pool, and copied to the device without the host
//! waiting: no pageable copy on the way, and no pinning per batch.
//!
//! Pinning goes through `_pin_memory`, never `pin_memory(device)`: libtorch
//! 2.11 deprecates the latter's device argument and warns on every call,
//! twice (in `pin_memory` and the `is_pinned` it calls), hundreds of lines
//! a second at a GPU's update rate.

use std::sync::{Arc, Mutex};

use tch::{Device, Kind, Tensor};

/// Decodes batches for one training device; shared by the input workers.
#[derive(Clone)]
pub struct Uploader {
    device: Device,
    /// Pinned (obs, next_obs) buffers not leased to a batch (CUDA only).
    free: Arc<Mutex<Vec<Pinned>>>,
}

/// One batch's pair of pinned observation buffers.
struct Pinned {
    obs: Tensor,
    next_obs: Tensor,
}

/// A batch's hold on the pinned buffers its observations were copied from.
/// The buffers go back to the pool when the batch is dropped: by then the
/// update has read the device copies, so the copies from these buffers are
/// complete (stream order) and a new batch may overwrite them. A batch
/// dropped unread may return its buffers while its copy is still running;
/// what the copy then reads only reaches tensors nobody reads, and the
/// next batch's copy is queued after it.
pub struct Staging {
    buffers: Option<Pinned>,
    pool: Arc<Mutex<Vec<Pinned>>>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(b) = self.buffers.take() {
            self.pool.lock().expect("pinned pool").push(b);
        }
    }
}

impl Uploader {
    pub fn new(device: Device) -> Uploader {
        Uploader {
            device,
            free: Arc::default(),
        }
    }

    /// `(obs, next_obs)` of `shape` on the training device, filled by
    /// `decode` with the two host arrays to write, and the hold on their
    /// pinned buffers (CUDA only).
    pub fn observations<E>(
        &self,
        shape: &[i64],
        decode: impl FnOnce(&mut [u8], &mut [u8]) -> Result<(), E>,
    ) -> Result<(Tensor, Tensor, Option<Staging>), E> {
        if self.device == Device::Cpu {
            let (mut obs, mut next) = (host(shape), host(shape));
            decode(bytes_mut(&mut obs), bytes_mut(&mut next))?;
            return Ok((obs, next, None));
        }
        // Held from the start, so a batch that fails to decode gives its
        // buffers back too.
        let mut staging = Staging {
            buffers: Some(self.lease(shape)),
            pool: self.free.clone(),
        };
        let pinned = staging.buffers.as_mut().expect("just leased");
        decode(bytes_mut(&mut pinned.obs), bytes_mut(&mut pinned.next_obs))?;
        let to_device = |t: &Tensor| t.to_device_(self.device, Kind::Uint8, true, false);
        let (obs, next) = (to_device(&pinned.obs), to_device(&pinned.next_obs));
        Ok((obs, next, Some(staging)))
    }

    /// A free pair of pinned buffers of `shape`, else a new one (as many as
    /// batches are in flight at once: the input workers', the queued ones
    /// and the one in training). Buffers of another shape are let go.
    fn lease(&self, shape: &[i64]) -> Pinned {
        let mut free = self.free.lock().expect("pinned pool");
        while let Some(b) = free.pop() {
            if b.obs.size() == shape {
                return b;
            }
        }
        drop(free);
        let pin = |t: Tensor| t.internal_pin_memory(self.device);
        Pinned {
            obs: pin(host(shape)),
            next_obs: pin(host(shape)),
        }
    }

    /// A small host array on the training device: pinned and copied without
    /// waiting on CUDA (libtorch's pinned allocator keeps the block until
    /// the copy is done), as it is on the CPU.
    pub fn upload(&self, host: Tensor) -> Tensor {
        if self.device == Device::Cpu {
            return host;
        }
        let pinned = host.internal_pin_memory(self.device);
        pinned.to_device_(self.device, pinned.kind(), true, false)
    }
}

fn host(shape: &[i64]) -> Tensor {
    Tensor::empty(shape, (Kind::Uint8, Device::Cpu))
}

/// The bytes of a contiguous host `u8` tensor that nothing else references.
fn bytes_mut(t: &mut Tensor) -> &mut [u8] {
    assert!(
        t.device() == Device::Cpu && t.kind() == Kind::Uint8 && t.is_contiguous(),
        "decoding needs a contiguous host byte tensor"
    );
    let len = t.numel();
    // SAFETY: the tensor is contiguous, on the host, of `len` bytes; it was
    // made here (or leased from the pool, whose buffers are never shared)
    // and the `&mut` borrow keeps every other use out while the slice lives.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, len) }
}
