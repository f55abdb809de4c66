//! `apex export`: a checkpoint's weights as safetensors, under the same names
//! (`conv1.weight`, `advantage.hidden.bias`, ...), so PyTorch and other
//! tools can use a trained network without libtorch's archive format.
//! `scripts/apex_qnet.py` rebuilds the network from such a file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::{Device, Tensor};

#[derive(Args)]
pub struct ExportArgs {
    /// A learner checkpoint (checkpoint.ot in a run folder).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The safetensors file to write [default: model.safetensors beside the checkpoint].
    #[arg(long)]
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

/// Writes the online network's tensors of `checkpoint` to `out`; returns how many.
pub fn export(checkpoint: &Path, out: &Path) -> Result<usize> {
    let bytes = std::fs::read(checkpoint).with_context(|| {
        format!(
            "cannot read checkpoint {}: give the checkpoint.ot of a run folder",
            checkpoint.display()
        )
    })?;
    // A checkpoint saved on a GPU still exports on a machine without one.
    let tensors = Tensor::load_multi_from_stream_with_device(std::io::Cursor::new(&bytes), Device::Cpu)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not an apex checkpoint ({}): give the checkpoint.ot that apex local or apex learner wrote",
                checkpoint.display(),
                first_line(&e.to_string())
            )
        })?;
    if tensors.is_empty() {
        bail!(
            "{} holds no tensors: give the checkpoint.ot that apex local or apex learner wrote",
            checkpoint.display()
        );
    }
    // safetensors stores plain dense buffers; the training state stays behind.
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(name, _)| apex_learner::checkpoint::is_online_weight(name))
        .map(|(name, t)| (name, t.detach().contiguous()))
        .collect();
    Tensor::write_safetensors(&tensors, out).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {} ({}): check that its folder exists and is writable, or pass --out",
            out.display(),
            first_line(&e.to_string())
        )
    })?;
    Ok(tensors.len())
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
