//! `apex doctor`: what this machine offers apex.

use anyhow::Result;
use apex_env::rom;
use clap::Args;

#[derive(Args)]
pub struct DoctorArgs {
    /// Fail unless CUDA is usable.
    #[arg(long)]
    require_cuda: bool,
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let cuda = tch::Cuda::is_available();
    println!("libtorch: loaded, {} CPU threads", tch::get_num_threads());
    println!(
        "cuda: {}",
        if cuda {
            format!("available, {} device(s)", tch::Cuda::device_count())
        } else {
            "not available".into()
        }
    );
    let dir = rom::default_rom_dir();
    let ready = rom::games()
        .filter(|g| rom::locate(&dir, g).is_ok())
        .count();
    println!(
        "roms: {ready} of {} games ready in {}",
        rom::games().count(),
        dir.display()
    );
    rom::locate(&dir, "breakout")?;
    if args.require_cuda && !cuda {
        anyhow::bail!(
            "cuda is not available: check the NVIDIA driver and that libtorch_cuda.so loads"
        );
    }
    Ok(())
}
