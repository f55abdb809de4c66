//! The client side of the learner's weights service, shared by everything
//! that plays with the learner's network (actors, the evaluator).

use crate::auth::Channel;
use crate::transport::{with_deadline, UNARY_DEADLINE};
use crate::v1::parameters_client::ParametersClient;
use crate::v1::WeightsRequest;

/// Weights as the learner published them.
#[derive(Debug, Clone)]
pub struct FetchedWeights {
    pub version: u64,
    /// The learner's gradient updates behind them.
    pub updates: u64,
    pub data: Vec<u8>,
}

/// Fetches the learner's weights unless they are version `have`; `None`
/// when they are (a restarted learner may serve a lower version: it is the
/// one training now, so it is taken).
pub async fn fetch_weights(
    params: &mut ParametersClient<Channel>,
    have: u64,
) -> Result<Option<FetchedWeights>, tonic::Status> {
    let request = with_deadline(WeightsRequest { have_version: have }, UNARY_DEADLINE);
    let mut chunks = params.get_weights(request).await?.into_inner();
    let (mut version, mut updates, mut total, mut data) = (0, 0, 0, Vec::new());
    while let Some(chunk) = chunks.message().await? {
        (version, updates, total) = (chunk.version, chunk.updates, chunk.total_bytes);
        data.extend_from_slice(&chunk.data);
    }
    if version == 0 {
        return Ok(None);
    }
    if data.len() as u64 != total {
        return Err(tonic::Status::data_loss(format!(
            "weights stream ended at {} of {total} bytes",
            data.len()
        )));
    }
    Ok(Some(FetchedWeights {
        version,
        updates,
        data,
    }))
}
