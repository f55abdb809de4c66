//! `apex export`: a checkpoint's weights as safetensors, under the same names
//! (`conv1.weight`, `advantage.hidden.bias`, ...), so PyTorch and other
//! tools can use a trained network without libtorch's archive format.
//! `scripts/apex_qnet.py` rebuilds the network from such a file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Tensor;

#[derive(Args)]
pub struct ExportArgs {
    /// A learner checkpoint (checkpoint.ot in a run folder).
    #[arg(long, env = "APEX_CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// The safetensors file to write [default: model.safetensors beside the checkpoint].
    #[arg(long, env = "APEX_OUT")]
    pub out: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| {
        args.checkpoint
            .parent()
            .unwrap_or(Path::new("."))
            .join("model.safetensors")
    });
    let count = export(&args.checkpoint, &out)?;
    println!(
        "wrote {count} tensors to {} (load it in PyTorch with scripts/apex_qnet.py)",
        out.display()
    );
    Ok(())
}

/// The tensor that tells a quantile head's count, which the output layer's
/// rows (actions times quantiles) cannot tell alone.
const QUANTILES_TENSOR: &str = "quantiles";

/// Writes the online network's tensors of `checkpoint` to `out` (and, for a
/// quantile head, [`QUANTILES_TENSOR`]); returns how many.
pub fn export(checkpoint: &Path, out: &Path) -> Result<usize> {
    use apex_learner::persist::checkpoint::{is_online_weight, saved_quantiles};
    let all = read_checkpoint(checkpoint)?.tensors;
    let quantiles = saved_quantiles(&all);
    // safetensors stores plain dense buffers; the training state stays behind.
    let mut tensors: Vec<(String, Tensor)> = all
        .into_iter()
        .filter(|(name, _)| is_online_weight(name))
        .map(|(name, t)| (name, t.detach().contiguous()))
        .collect();
    if let Some(n) = quantiles {
        tensors.push((QUANTILES_TENSOR.into(), Tensor::from_slice(&[n.get()])));
    }
    Tensor::write_safetensors(&tensors, out).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {} ({}): check that its folder exists and is writable, or pass --out",
            out.display(),
            first_line(&e.to_string())
        )
    })?;
    Ok(tensors.len())
}

/// A checkpoint file as `apex export`, `apex eval` and `apex play` read it.
pub struct Checkpoint {
    pub bytes: Vec<u8>,
    /// Its named tensors, on the CPU whichever device wrote them.
    pub tensors: Vec<(String, Tensor)>,
}

/// Reads `path` as a checkpoint; a file that is not one is a clear error.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read checkpoint {}: give the checkpoint.ot of a run folder",
            path.display()
        )
    })?;
    let tensors = apex_learner::persist::checkpoint::read_tensors(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an apex checkpoint ({}): give the checkpoint.ot that apex local or apex learner wrote",
            path.display(),
            first_line(&e.to_string())
        )
    })?;
    if tensors.is_empty() {
        bail!(
            "{} holds no tensors: give the checkpoint.ot that apex local or apex learner wrote",
            path.display()
        );
    }
    Ok(Checkpoint { bytes, tensors })
}

/// libtorch's messages run on with advice and a C++ backtrace: keep the
/// first sentence.
fn first_line(message: &str) -> &str {
    let line = message.lines().next().unwrap_or("").trim();
    let line = line.strip_prefix("Internal torch error: ").unwrap_or(line);
    match line.find(". ") {
        Some(end) => &line[..end],
        None => line.trim_end_matches('.'),
    }
}
