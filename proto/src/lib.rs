//! The gRPC contract between actors, the replay server and the learner
//! (`apex.v1`). The pipeline work fills it in.
