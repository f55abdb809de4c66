//! What apex makes of games for people and for other tools, beside the
//! environments themselves: animated GIFs of play (`gif.rs`, the run
//! folder's and `apex play`'s), the recorder behind `apex env record`
//! (`record.rs`), and `.npy` arrays of observations (`npy.rs`).

pub mod gif;
pub mod npy;
pub mod record;
