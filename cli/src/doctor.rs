//! `apex doctor`: what this machine offers apex.

use anyhow::Result;
use apex_env::rom;
use clap::Args;

#[derive(Args)]
pub struct DoctorArgs {
    /// Fail unless CUDA is usable.
    #[arg(long, env = "APEX_REQUIRE_CUDA")]
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
    apex_model::device(args.require_cuda)?;
    Ok(())
}
