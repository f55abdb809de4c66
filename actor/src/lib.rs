//! Actors: many environments stepped together, one batched forward pass per
//! step, transitions streamed to the replay server. The pipeline work fills it in.
