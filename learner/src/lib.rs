//! The learner: samples from the replay server, trains the Q-network and
//! publishes weights. The pipeline work fills it in.
