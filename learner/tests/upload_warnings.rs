//! Uploading batches to CUDA prints nothing: a deprecated libtorch call on
//! this path warns on every batch and floods the logs. libtorch writes its
//! warnings to stderr, so the test points stderr at a file while batches go
//! up. Its own test binary: redirecting stderr is the whole process's.

use apex_learner::io::batch::Batch;
use apex_learner::io::upload::Uploader;
use apex_proto::v1::{Codec, Frame, SampleResponse, Shape};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use tch::{Device, Kind};

fn response(n: usize, v: u8) -> SampleResponse {
    let shape = [4usize, 84, 84];
    let frame = |id: u64, v: u8| Frame {
        id,
        data: Codec::Lz4.encode(&[v; 84 * 84]).into(),
    };
    SampleResponse {
        obs_shape: Some(Shape::of(&shape)),
        codec: Codec::Lz4 as i32,
        ids: (0..n as u64).collect(),
        weights: vec![1.0; n],
        frames: vec![frame(0, v), frame(1, v.wrapping_add(1))],
        obs_frames: vec![0; n * 4],
        next_obs_frames: vec![1; n * 4],
        actions: vec![1; n],
        rewards: vec![1.0; n],
        discounts: vec![0.99; n],
    }
}

/// What `f` writes to the process's stderr (fd 2), C++ included.
fn stderr_of(f: impl FnOnce()) -> String {
    let mut file = tempfile::tempfile().unwrap();
    std::io::stderr().flush().unwrap();
    // SAFETY: plain descriptor calls on descriptors this function owns or
    // restores; nothing else in this test binary writes to stderr meanwhile.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    // SAFETY: as above.
    assert!(unsafe { libc::dup2(file.as_raw_fd(), 2) } >= 0);
    f();
    std::io::stderr().flush().unwrap();
    // SAFETY: as above.
    assert!(unsafe { libc::dup2(saved, 2) } >= 0);
    // SAFETY: as above.
    unsafe { libc::close(saved) };
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    text
}

#[test]
#[ignore = "needs a CUDA device"]
fn uploads_warn_nothing() {
    assert!(
        tch::Cuda::is_available(),
        "this test needs a CUDA device: run it where nvidia-smi works"
    );
    let to = Uploader::new(Device::Cuda(0));
    let printed = stderr_of(|| {
        for k in 0..8u8 {
            let b = Batch::from_response(response(512, k), &[4, 84, 84], 4, &to).unwrap();
            // Read back, so every queued copy has run.
            let sum = b.obs.sum(Kind::Int64).int64_value(&[]);
            assert_eq!(sum, 512 * 4 * 84 * 84 * k as i64);
        }
    });
    assert!(printed.is_empty(), "uploads printed:\n{printed}");
}

/// The capture itself sees what native code writes to fd 2, as libtorch's
/// warnings are: without this, an empty capture would prove nothing.
#[test]
fn the_capture_sees_what_is_printed() {
    let line = b"a warning\n";
    let printed = stderr_of(|| {
        // SAFETY: writes the buffer's own bytes to fd 2.
        let n = unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        assert_eq!(n, line.len() as isize);
    });
    assert_eq!(printed, "a warning\n");
}
