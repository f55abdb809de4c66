//! Presets: hyperparameters kept in TOML files (`presets/*.toml`, built into
//! the binary), beneath environment variables and flags. A preset key is a
//! flag's name with underscores (`batch_size` is `--batch-size`); the file's
//! sections only group keys for the reader. A preset becomes the defaults
//! of the flags it names, so clap resolves flag > `APEX_*` variable >
//! preset > built-in default with no per-field code, and the process's
//! environment stays as it was.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use serde::Serialize;

/// An on/off value, read the same from a flag, an `APEX_*` variable and a
/// preset: `APEX_CUDA=1` must mean what `--cuda` means.
pub fn parse_switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" | "y" => Ok(true),
        "0" | "false" | "off" | "no" | "n" => Ok(false),
        _ => Err(format!(
            "'{value}' is neither on nor off: use true/false, on/off, yes/no or 1/0"
        )),
    }
}

/// The presets shipped in `presets/`, by name.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "apex-breakout",
        include_str!("../../presets/apex-breakout.toml"),
    ),
    (
        "apex-breakout-gpu",
        include_str!("../../presets/apex-breakout-gpu.toml"),
    ),
    ("dqn-nature", include_str!("../../presets/dqn-nature.toml")),
];

/// The preset when none is named: sized for a small CPU machine.
pub const DEFAULT: &str = "apex-breakout";
/// The preset when none is named and `--cuda` (or `APEX_CUDA`) asks for a GPU.
pub const DEFAULT_GPU: &str = "apex-breakout-gpu";

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("unknown preset '{name}': use one of {known} or a path to a .toml file")]
    Unknown { name: String, known: String },
    #[error("cannot read preset {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("preset {name} is not valid TOML: {message}")]
    Malformed { name: String, message: String },
    #[error("preset {name}: unknown setting '{key}': see `apex local --help` for the settings (underscores for dashes)")]
    UnknownKey { name: String, key: String },
    #[error("preset {name}: setting '{key}' must be a number, string or boolean")]
    BadValue { name: String, key: String },
}

/// `--preset`, on the commands whose settings a preset holds.
#[derive(Args, Clone)]
pub struct PresetArg {
    /// Hyperparameters: a preset in presets/ (apex-breakout, apex-breakout-gpu,
    /// dqn-nature) or a .toml file [default: apex-breakout, or apex-breakout-gpu
    /// with --cuda]; flags and APEX_* variables override its values.
    #[arg(long = "preset", env = "APEX_PRESET")]
    pub name: Option<String>,
}

/// The preset the command line asks for: `--preset X`, else `APEX_PRESET`,
/// else the GPU default with `--cuda` (or `APEX_CUDA` set true), else the
/// default. Read before clap parses, since it feeds clap's input.
pub fn chosen(args: &[String]) -> String {
    named(args).unwrap_or_else(|| {
        if cuda_requested(args) {
            DEFAULT_GPU
        } else {
            DEFAULT
        }
        .to_owned()
    })
}

/// `--cuda` or `--cuda=<on>`, else `APEX_CUDA` set on, read as clap will
/// read them; a value that is neither on nor off is left for clap to refuse.
fn cuda_requested(args: &[String]) -> bool {
    let on = |v: &str| parse_switch(v).unwrap_or(false);
    match args
        .iter()
        .rev()
        .find(|a| *a == "--cuda" || a.starts_with("--cuda="))
    {
        Some(flag) => flag.strip_prefix("--cuda=").is_none_or(on),
        None => std::env::var("APEX_CUDA").is_ok_and(|v| on(&v)),
    }
}

/// `--preset X`, else `APEX_PRESET`.
fn named(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--preset" {
            if let Some(v) = it.next() {
                return Some(v.clone());
            }
        } else if let Some(v) = a.strip_prefix("--preset=") {
            return Some(v.to_owned());
        }
    }
    std::env::var("APEX_PRESET").ok()
}

/// A built-in name, or a path to a file (anything with `/` or ending in `.toml`).
pub fn load(name: &str) -> Result<toml::Table, PresetError> {
    let text = if name.contains('/') || name.ends_with(".toml") {
        std::fs::read_to_string(Path::new(name)).map_err(|source| PresetError::Unreadable {
            path: name.into(),
            source,
        })?
    } else {
        BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| text.to_string())
            .ok_or_else(|| PresetError::Unknown {
                name: name.to_owned(),
                known: BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?
    };
    text.parse::<toml::Table>()
        .map_err(|e| PresetError::Malformed {
            name: name.to_owned(),
            message: e.message().to_owned(),
        })
}

/// `(key, value)` for every setting in `preset`, checked against the flags
/// `command` (and its subcommands) know, with each flag's variable name.
pub fn settings(
    name: &str,
    preset: &toml::Table,
    command: &clap::Command,
) -> Result<Vec<(String, String)>, PresetError> {
    let mut out = Vec::new();
    for (section, table) in preset {
        // Keys may sit in sections or at the top.
        let entries: Vec<(&String, &toml::Value)> = match table {
            toml::Value::Table(t) => t.iter().collect(),
            value => vec![(section, value)],
        };
        for (key, value) in entries {
            let env = variable(command, &key.replace('_', "-")).ok_or_else(|| {
                PresetError::UnknownKey {
                    name: name.to_owned(),
                    key: key.clone(),
                }
            })?;
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(PresetError::BadValue {
                        name: name.to_owned(),
                        key: key.clone(),
                    })
                }
            };
            out.push((env, text));
        }
    }
    Ok(out)
}

/// The environment variable of the flag `--long` anywhere in `command`.
fn variable(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| variable(sub, long))
        })
}

/// The command line `C` with the chosen preset's values as the defaults of
/// the flags they name. Read before clap parses, since it feeds clap's input.
pub fn command<C: CommandFactory>(args: &[String]) -> Result<clap::Command, PresetError> {
    let name = chosen(args);
    let preset = load(&name)?;
    let base = C::command();
    let values: HashMap<String, String> = settings(&name, &preset, &base)?.into_iter().collect();
    Ok(with_defaults(base, &values))
}

/// `command` and its subcommands, each flag whose variable `values` names
/// defaulting to that value.
fn with_defaults(command: clap::Command, values: &HashMap<String, String>) -> clap::Command {
    let named = |arg: &clap::Arg| {
        arg.get_env()
            .and_then(|env| env.to_str())
            .is_some_and(|env| values.contains_key(env))
    };
    // Only commands with such flags are touched: mutating the top level's
    // arguments would drop clap's generated --version from its help.
    if !command.get_arguments().any(named) {
        return command.mut_subcommands(|sub| with_defaults(sub, values));
    }
    command
        .mut_args(|arg| {
            let value = arg
                .get_env()
                .and_then(|env| values.get(env.to_str()?))
                .cloned();
            match value {
                // clap keeps defaults as 'static; a process parses its command line once.
                Some(v) => arg.default_value(&*String::leak(v)).required(false),
                None => arg,
            }
        })
        .mut_subcommands(|sub| with_defaults(sub, values))
}

/// Writes `config` (what a run resolved) as `config.toml` in `dir`.
pub fn write_resolved(dir: &Path, preset: &str, config: &impl Serialize) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create run folder {}", dir.display()))?;
    let body = toml::to_string(config).context("cannot write the resolved config")?;
    let text = format!(
        "# What this run resolved from preset {preset}, APEX_* variables and flags.\n\
         # Use it as a preset to repeat the run: --preset {}\n\n{body}",
        dir.join(apex_run_folder::CONFIG_TOML).display()
    );
    let path = dir.join(apex_run_folder::CONFIG_TOML);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Serializes through `Display`, for types whose text form is their flag value.
pub fn as_text<T: Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_preset_names_only_known_settings() {
        for (name, _) in BUILT_IN {
            let preset = load(name).unwrap();
            let set = settings(name, &preset, &crate::command::Cli::command()).unwrap();
            assert!(set.len() > 30, "{name}: {} settings", set.len());
            assert!(set.iter().all(|(env, _)| env.starts_with("APEX_")));
        }
    }

    #[test]
    fn a_preset_becomes_the_defaults_and_leaves_the_environment_alone() {
        let args: Vec<String> = [
            "apex",
            "learner",
            "--preset",
            "dqn-nature",
            "--batch-size",
            "7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let matches = command::<crate::command::Cli>(&args)
            .unwrap()
            .try_get_matches_from(&args)
            .unwrap();
        let learner = matches.subcommand_matches("learner").unwrap();
        let raw = |id: &str| learner.get_raw(id).unwrap().next().unwrap().to_owned();
        assert_eq!(raw("learning_rate"), "0.0001", "from the preset");
        assert_eq!(raw("batch_size"), "7", "the flag wins");
        assert!(std::env::var_os("APEX_LEARNING_RATE").is_none());
        assert!(std::env::var_os("APEX_BATCH_SIZE").is_none());
    }

    #[test]
    fn unknown_keys_and_presets_are_named() {
        let preset: toml::Table = "[learner]\nbatch_sise = 3".parse().unwrap();
        let e = settings("mine.toml", &preset, &crate::command::Cli::command()).unwrap_err();
        assert!(e.to_string().contains("'batch_sise'"), "{e}");
        let e = load("apex-brekout").unwrap_err();
        assert!(
            e.to_string()
                .contains("apex-breakout, apex-breakout-gpu, dqn-nature"),
            "{e}"
        );
    }

    #[test]
    fn the_preset_flag_beats_the_variable() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            chosen(&args(&["apex", "local", "--preset", "dqn-nature"])),
            "dqn-nature"
        );
        assert_eq!(chosen(&args(&["apex", "--preset=x.toml"])), "x.toml");
        assert_eq!(
            chosen(&args(&["apex", "local", "--cuda"])),
            DEFAULT_GPU,
            "--cuda picks the GPU preset"
        );
        assert_eq!(
            chosen(&args(&[
                "apex",
                "local",
                "--cuda",
                "--preset",
                "dqn-nature"
            ])),
            "dqn-nature"
        );
        assert_eq!(chosen(&args(&["apex", "local", "--cuda=on"])), DEFAULT_GPU);
        assert_eq!(chosen(&args(&["apex", "local", "--cuda=0"])), DEFAULT);
    }

    #[test]
    fn switches_read_alike_everywhere() {
        for on in ["1", "true", "on", "yes", "TRUE", "On"] {
            assert_eq!(parse_switch(on), Ok(true), "{on}");
        }
        for off in ["0", "false", "off", "no", "False"] {
            assert_eq!(parse_switch(off), Ok(false), "{off}");
        }
        let e = parse_switch("maybe").unwrap_err();
        assert!(e.contains("'maybe'") && e.contains("on/off"), "{e}");
    }

    #[test]
    fn every_built_in_preset_states_its_replay_ratio() {
        for (name, text) in BUILT_IN {
            let line = text
                .lines()
                .find(|l| l.starts_with("samples_per_insert"))
                .unwrap_or_else(|| panic!("{name} sets no samples_per_insert"));
            assert!(line.contains("# replay ratio"), "{name}: {line}");
            let ratio: f64 = load(name).unwrap()["replay"]["samples_per_insert"]
                .as_float()
                .unwrap();
            assert!(ratio > 0.0, "{name} must hold a ratio");
        }
    }
}
