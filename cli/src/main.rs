//! `apex`: parses the command line and hands each command to the library
//! code that runs it.

#[cfg(feature = "torch")]
use apex::command::TorchCommand;
use apex::command::{Cli, Command};
#[cfg(feature = "torch")]
use apex::{doctor, evaluate, export};
use apex::{env_cmd, health, plot, preset, services};
use clap::FromArgMatches;

apex::use_jemalloc!();

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let command = preset::command::<Cli>(&args).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let cli = Cli::from_arg_matches(&command.get_matches_from(&args)).unwrap_or_else(|e| e.exit());
    // The preset command() used: --preset, APEX_PRESET, or the default for the device.
    let preset = preset::chosen(&args);
    apex::init_logging();
    let runtime = || tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match cli.command {
        Command::ReplayServer(a) => runtime().block_on(services::replay_server(a)),
        #[cfg(feature = "torch")]
        Command::Local(a) => runtime().block_on(services::local(a, &preset)),
        #[cfg(feature = "torch")]
        Command::Learner(a) => runtime().block_on(services::learner(a, &preset)),
        #[cfg(feature = "torch")]
        Command::Actor(a) => runtime().block_on(services::actor(a)),
        #[cfg(not(feature = "torch"))]
        Command::Local(_) | Command::Learner(_) | Command::Actor(_) => {
            let _ = preset;
            Err(anyhow::anyhow!(
                "this apex was built without libtorch (the replay server's image): run this \
                 command from the apex-learner or apex-actor image, or build apex with its \
                 default features"
            ))
        }
        #[cfg(feature = "torch")]
        Command::Torch(c) => match c {
            TorchCommand::Evaluator(a) => runtime().block_on(services::evaluator(a)),
            TorchCommand::Eval(a) => evaluate::eval(a),
            TorchCommand::Play(a) => evaluate::play_cmd(a),
            TorchCommand::Doctor(a) => doctor::run(a),
            TorchCommand::Export(a) => export::run(a),
        },
        Command::Env(c) => env_cmd::run(c),
        Command::Health(a) => runtime().block_on(health::run(a)),
        Command::Plot(a) => plot::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
