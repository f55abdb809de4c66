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

/// Every preset shipped in `presets/`, by file name without `.toml`,
/// sorted (written by `build.rs`, so none can be left out).
const BUILT_IN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/presets.rs"));

/// Old names of built-in presets, still accepted: (old, new).
const ALIASES: &[(&str, &str)] = &[
    ("apex-breakout", "apex-atari"),
    ("apex-breakout-gpu", "apex-atari-gpu"),
];

/// Variables renamed to `APEX_` + their flag's name: (old, new). The old
/// names still work, beneath the new ones, with a warning.
pub const RENAMED_VARIABLES: &[(&str, &str)] = &[
    ("APEX_REPLAY_CAPACITY", "APEX_CAPACITY"),
    ("APEX_REPLAY_MIN_SIZE", "APEX_MIN_SIZE"),
    (
        "APEX_REPLAY_CHECKPOINT_EVERY_SECS",
        "APEX_CHECKPOINT_EVERY_SECS",
    ),
    ("APEX_PLOT_OUT", "APEX_OUT"),
];

/// The preset when none is named: sized for a small CPU machine, any game.
pub const DEFAULT: &str = "apex-atari";
/// The preset when none is named and `--cuda` (or `APEX_CUDA`) asks for a GPU.
pub const DEFAULT_GPU: &str = "apex-atari-gpu";

/// The names of the built-in presets, sorted.
pub fn built_in() -> impl Iterator<Item = &'static str> {
    BUILT_IN.iter().map(|(n, _)| *n)
}

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
    #[error("preset {name}: {key} = {value} is refused ({reason}): change it in the preset or override it with --{flag}")]
    Refused {
        name: String,
        key: String,
        value: String,
        flag: String,
        reason: String,
    },
}

/// `--preset`, on the commands whose settings a preset holds.
#[derive(Args, Clone)]
pub struct PresetArg {
    /// Hyperparameters: a preset in presets/ (apex-atari, apex-atari-gpu,
    /// catch, dqn-nature) or a .toml file [default: the run folder's
    /// config.toml when `apex local --run-dir` names a run that has one,
    /// else the preset named like --game where there is one (catch), else
    /// apex-atari, or apex-atari-gpu with --cuda]; flags and APEX_*
    /// variables override its values.
    #[arg(long = "preset", env = "APEX_PRESET")]
    pub name: Option<String>,
}

/// The preset the command line asks for: `--preset X`, else `APEX_PRESET`,
/// else (for `apex local`) the config.toml of the run folder it resumes,
/// else the preset of the game's own name (`--game catch`: catch), else
/// the GPU default with `--cuda` (or `APEX_CUDA` set true), else the
/// default. Read before clap parses, since it feeds clap's input.
pub fn chosen(args: &[String]) -> String {
    named(args)
        .or_else(|| resumed(args))
        .or_else(|| {
            let game = value_of(args, "--game", "APEX_GAME")?;
            built_in().find(|n| *n == game).map(str::to_owned)
        })
        .unwrap_or_else(|| {
            if cuda_requested(args) {
                DEFAULT_GPU
            } else {
                DEFAULT
            }
            .to_owned()
        })
}

/// `runs/R/config.toml` where `args` are `apex local` with `--run-dir runs/R`
/// (or `APEX_RUN_DIR`) and that file exists: a resumed run repeats its
/// settings, and only what is given now changes them.
pub fn resumed(args: &[String]) -> Option<String> {
    if args.get(1).map(String::as_str) != Some("local") {
        return None;
    }
    let dir = value_of(args, "--run-dir", "APEX_RUN_DIR")?;
    let config = Path::new(&dir).join(apex_run_folder::CONFIG_TOML);
    config
        .is_file()
        .then(|| config.to_string_lossy().into_owned())
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
    value_of(args, "--preset", "APEX_PRESET")
}

/// The value of `flag` (`--flag X` or `--flag=X`; the last one wins, as
/// in clap), else the variable `env`.
fn value_of(args: &[String], flag: &str, env: &str) -> Option<String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            if let Some(v) = it.next() {
                found = Some(v.clone());
            }
        } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found.or_else(|| std::env::var(env).ok())
}

/// A built-in name (or an old one, `ALIASES`), or a path to a file
/// (anything with `/` or ending in `.toml`).
pub fn load(name: &str) -> Result<toml::Table, PresetError> {
    let text = if name.contains('/') || name.ends_with(".toml") {
        std::fs::read_to_string(Path::new(name)).map_err(|source| PresetError::Unreadable {
            path: name.into(),
            source,
        })?
    } else {
        let name = ALIASES
            .iter()
            .find(|(old, _)| *old == name)
            .map_or(name, |(_, new)| new);
        BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| text.to_string())
            .ok_or_else(|| PresetError::Unknown {
                name: name.to_owned(),
                known: built_in().collect::<Vec<_>>().join(", "),
            })?
    };
    text.parse::<toml::Table>()
        .map_err(|e| PresetError::Malformed {
            name: name.to_owned(),
            message: e.message().to_owned(),
        })
}

/// `(variable, value)` for every setting in `preset`, checked against the
/// flags `command` (and its subcommands) know and refused where their
/// flag's parser refuses the value.
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
            let long = key.replace('_', "-");
            let (arg, env) = flag(command, &long).ok_or_else(|| PresetError::UnknownKey {
                name: name.to_owned(),
                key: key.clone(),
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
            // Checked here, so that the message names the preset: clap
            // would refuse the default too, but as if a flag were wrong.
            refusal(arg, &text).map_or(Ok(()), |reason| {
                Err(PresetError::Refused {
                    name: name.to_owned(),
                    key: key.clone(),
                    value: text.clone(),
                    flag: long.clone(),
                    reason,
                })
            })?;
            out.push((env, text));
        }
    }
    Ok(out)
}

/// The flag `--long` anywhere in `command` with an environment variable,
/// and its variable.
fn flag<'a>(command: &'a clap::Command, long: &str) -> Option<(&'a clap::Arg, String)> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| Some((a, a.get_env()?.to_string_lossy().into_owned())))
        .or_else(|| command.get_subcommands().find_map(|sub| flag(sub, long)))
}

/// Why `arg`'s parser refuses `text`, if it does: `text` as the default
/// of a bare copy of the flag (its parser, action and delimiter, none of
/// its ties to other flags), parsed as clap parses a preset's value.
fn refusal(arg: &clap::Arg, text: &str) -> Option<String> {
    // clap keeps names and defaults as 'static; a process checks a preset once.
    let leak = |s: &str| &*String::leak(s.to_owned());
    let mut bare = clap::Arg::new(arg.get_id().clone())
        .long(leak(arg.get_long()?))
        .action(arg.get_action().clone())
        .value_parser(arg.get_value_parser().clone())
        .default_value(leak(text));
    if let Some(n) = arg.get_num_args() {
        bare = bare.num_args(n);
    }
    if let Some(d) = arg.get_value_delimiter() {
        bare = bare.value_delimiter(d);
    }
    let e = clap::Command::new("preset")
        .arg(bare)
        .try_get_matches_from(["preset"])
        .err()?;
    // A parser's own reason where it gave one, else clap's words (for a
    // choice, with the values it takes).
    Some(match std::error::Error::source(&e) {
        Some(why) => why.to_string(),
        None => e
            .render()
            .to_string()
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.trim().trim_start_matches("error: "))
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// The values of variables under their old names (`RENAMED_VARIABLES`),
/// as `(new name, value)`, where the new name is not set; each with a
/// warning on stderr, once per process.
pub fn renamed_variables() -> Vec<(String, String)> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let found: Vec<(&str, &str, String)> = RENAMED_VARIABLES
        .iter()
        .filter(|(_, new)| std::env::var_os(new).is_none())
        .filter_map(|(old, new)| Some((*old, *new, std::env::var(old).ok()?)))
        .collect();
    WARNED.call_once(|| {
        for (old, new, _) in &found {
            eprintln!("warning: {old} is an old name: rename it {new} (it still works for now)");
        }
    });
    found
        .into_iter()
        .map(|(_, new, value)| (new.to_owned(), value))
        .collect()
}

/// The command line `C` with the chosen preset's values as the defaults of
/// the flags they name, and over them the values of variables set under
/// their old names. Read before clap parses, since it feeds clap's input.
pub fn command<C: CommandFactory>(args: &[String]) -> Result<clap::Command, PresetError> {
    let name = chosen(args);
    let preset = load(&name)?;
    let base = C::command();
    let mut values: HashMap<String, String> =
        settings(&name, &preset, &base)?.into_iter().collect();
    values.extend(renamed_variables());
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

/// The run folder's record of its restarts: one line each, with the
/// settings that differ from those it ran with before.
pub const RESUMES_LOG: &str = "resumes.log";

/// Writes `config` (what a run resolved) as `config.toml` in `dir`. Where
/// one is there already (a run started again in its folder), first appends
/// to `resumes.log` which settings differ from it, and returns them.
pub fn write_resolved(
    dir: &Path,
    preset: &str,
    config: &impl Serialize,
) -> anyhow::Result<Option<Vec<String>>> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create run folder {}", dir.display()))?;
    let path = dir.join(apex_run_folder::CONFIG_TOML);
    let body = toml::to_string(config).context("cannot write the resolved config")?;
    let before = std::fs::read_to_string(&path).ok();
    // A run resumed with its own config.toml keeps the name of the preset it began with.
    let origin = before
        .as_deref()
        .and_then(recorded_preset)
        .filter(|_| Path::new(preset) == path)
        .map_or_else(|| preset.to_owned(), |p| format!("{p} (resumed)"));
    let changed = match &before {
        Some(text) => {
            let now: toml::Table = body
                .parse()
                .context("cannot read the resolved config back")?;
            let changed = match text.parse::<toml::Table>() {
                Ok(was) => changes(&was, &now),
                Err(_) => vec!["the previous config.toml was not valid TOML".to_owned()],
            };
            log_resume(dir, preset, &changed)?;
            Some(changed)
        }
        None => None,
    };
    let text = format!(
        "# What this run resolved from preset {origin}, APEX_* variables and flags.\n\
         # Start apex local again with --run-dir {} to resume it with these settings\n\
         # (flags given then change them; resumes.log records what changed), or use it\n\
         # as a preset to repeat the run elsewhere: --preset {}\n\n{body}",
        dir.display(),
        path.display()
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(changed)
}

/// The preset named in a config.toml's first line, as `write_resolved` writes it.
fn recorded_preset(text: &str) -> Option<&str> {
    let rest = text
        .lines()
        .next()?
        .strip_prefix("# What this run resolved from preset ")?;
    let name = rest.split(", APEX_*").next()?;
    Some(name.strip_suffix(" (resumed)").unwrap_or(name))
}

/// `section.key: old -> new` for every setting that differs between two
/// resolved configs, in order; a setting only one has shows as `(unset)`.
pub fn changes(was: &toml::Table, now: &toml::Table) -> Vec<String> {
    let flat = |t: &toml::Table| -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for (section, value) in t {
            match value {
                toml::Value::Table(keys) => {
                    for (key, v) in keys {
                        out.insert(format!("{section}.{key}"), v.to_string());
                    }
                }
                v => {
                    out.insert(section.clone(), v.to_string());
                }
            }
        }
        out
    };
    let (was, now) = (flat(was), flat(now));
    let unset = "(unset)".to_owned();
    let mut keys: Vec<&String> = was.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| was.get(*k) != now.get(*k))
        .map(|k| {
            let old = was.get(k).unwrap_or(&unset);
            let new = now.get(k).unwrap_or(&unset);
            format!("{k}: {old} -> {new}")
        })
        .collect()
}

/// One line in `dir/resumes.log`: when, from which preset, what changed.
fn log_resume(dir: &Path, preset: &str, changed: &[String]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let what = if changed.is_empty() {
        "no setting changed".to_owned()
    } else {
        format!("changed {}", changed.join(", "))
    };
    let path = dir.join(RESUMES_LOG);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot open {}: check the run folder's permissions",
                path.display()
            )
        })?;
    writeln!(log, "{secs} resumed with preset {preset}: {what}")
        .with_context(|| format!("cannot write {}", path.display()))
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
                .contains("apex-atari, apex-atari-gpu, catch, dqn-nature"),
            "{e}"
        );
    }

    #[test]
    fn the_old_names_of_the_atari_presets_still_load() {
        assert_eq!(load("apex-breakout").unwrap(), load("apex-atari").unwrap());
        assert_eq!(
            load("apex-breakout-gpu").unwrap(),
            load("apex-atari-gpu").unwrap()
        );
        assert_ne!(load("apex-atari").unwrap(), load("apex-atari-gpu").unwrap());
    }

    #[test]
    fn a_value_its_flag_refuses_is_refused_in_a_preset_by_name() {
        let cli = crate::command::Cli::command();
        let cases = [
            (
                "[learner]\ntarget_update_every = 0",
                "target_update_every = 0",
            ),
            ("[learner]\npublish_every = 0", "publish_every = 0"),
            ("[learner]\ncheckpoint_every = 0", "checkpoint_every = 0"),
            ("[replay]\ncapacity = 0", "capacity = 0"),
            (
                "[learner]\noptimizer = \"sgd\"",
                "possible values: adam, rmsprop",
            ),
            (
                "[eval]\neval_protocols = \"v4,v9\"",
                "eval_protocols = v4,v9",
            ),
        ];
        for (text, needle) in cases {
            let preset: toml::Table = text.parse().unwrap();
            let e = settings("mine.toml", &preset, &cli)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("preset mine.toml: "), "{e}");
            assert!(e.contains(needle), "'{needle}' not in {e}");
        }
        let e = settings(
            "mine.toml",
            &"[learner]\ntarget_update_every = 0".parse().unwrap(),
            &cli,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be at least 1"), "{e}");
        assert!(e.contains("--target-update-every"), "{e}");
        // A list is checked part by part, and a good one passes.
        let fine: toml::Table = "[eval]\neval_protocols = \"v4,v5\"".parse().unwrap();
        assert_eq!(settings("mine.toml", &fine, &cli).unwrap().len(), 1);
    }

    #[test]
    fn every_flag_reads_apex_and_its_name() {
        // The flags whose variable is not APEX_ + their name, and why.
        const EXCEPTIONS: &[(&str, &str)] = &[];
        fn walk(command: &clap::Command, path: &str, bad: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                // clap's own.
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                let want = format!("APEX_{}", long.replace('-', "_").to_uppercase());
                let want = EXCEPTIONS
                    .iter()
                    .find(|(l, _)| *l == long)
                    .map_or(want, |(_, env)| env.to_string());
                let got = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                if got.as_deref() != Some(want.as_str()) {
                    bad.push(format!("{path} --{long}: {got:?}, not {want}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bad);
            }
        }
        let mut bad = Vec::new();
        let cli = crate::command::Cli::command();
        walk(&cli, "apex", &mut bad);
        assert!(bad.is_empty(), "{}", bad.join("\n"));
        // The walk does reach every command's flags.
        let local = cli.find_subcommand("local").unwrap();
        assert!(local
            .get_arguments()
            .any(|a| a.get_long() == Some("log-every")));
        let eval = cli.find_subcommand("eval").unwrap();
        assert!(eval
            .get_arguments()
            .any(|a| a.get_long() == Some("episodes")));
    }

    #[test]
    fn the_old_names_of_renamed_variables_name_flags_no_more() {
        let cli = crate::command::Cli::command();
        for (old, new) in RENAMED_VARIABLES {
            let envs: Vec<String> = all_variables(&cli);
            assert!(!envs.iter().any(|e| e == old), "{old} is still read");
            assert!(envs.iter().any(|e| e == new), "nothing reads {new}");
        }
    }

    fn all_variables(command: &clap::Command) -> Vec<String> {
        let mut out: Vec<String> = command
            .get_arguments()
            .filter_map(|a| Some(a.get_env()?.to_string_lossy().into_owned()))
            .collect();
        for sub in command.get_subcommands() {
            out.extend(all_variables(sub));
        }
        out
    }

    /// A command line as `chosen` takes it.
    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_game_with_a_preset_of_its_name_brings_it_unless_one_is_named() {
        assert_eq!(
            chosen(&args(&["apex", "local", "--game", "catch"])),
            "catch"
        );
        assert_eq!(chosen(&args(&["apex", "local", "--game=catch"])), "catch");
        assert_eq!(chosen(&args(&["apex", "local", "--game", "pong"])), DEFAULT);
        assert_eq!(
            chosen(&args(&[
                "apex",
                "local",
                "--game",
                "catch",
                "--preset",
                "dqn-nature"
            ])),
            "dqn-nature"
        );
    }

    #[test]
    fn the_preset_flag_beats_the_variable() {
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
