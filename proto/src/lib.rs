//! The gRPC contract between actors, the replay server and the learner
//! (`apex.v1`), generated from `proto/apex/v1/apex.proto`, and the message
//! size limit every endpoint uses.

pub mod v1 {
    tonic::include_proto!("apex.v1");
}

/// Batches of Atari transitions (28 KB per observation) and the weights
/// exceed tonic's 4 MiB default; every client and server raises it to this.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Chunk size for streaming weights.
pub const WEIGHTS_CHUNK_BYTES: usize = 1024 * 1024;

impl v1::Shape {
    pub fn of(dims: &[usize]) -> Self {
        v1::Shape {
            dims: dims.iter().map(|&d| d as u32).collect(),
        }
    }

    pub fn dims(&self) -> Vec<usize> {
        self.dims.iter().map(|&d| d as usize).collect()
    }

    /// Bytes of one uint8 tensor of this shape.
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}
