//! The replay server: stores transitions from actors and serves batches to
//! the learner; never links libtorch. The pipeline work fills it in.
