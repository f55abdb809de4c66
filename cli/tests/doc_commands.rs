//! Every `apex ...` command line the documentation shows parses with the
//! real command line (the lines are found by
//! `apex_system_tests::doc_commands`, which says where it looks and how
//! placeholders are filled). Nothing runs: each line goes through the
//! preset layer and clap as `main` does (`preset::command`, then clap's
//! parser), so a renamed flag, subcommand, preset or `APEX_*` variable in
//! the docs fails here, naming the file and line. Inline code may leave out
//! required arguments (`apex eval` in a sentence); code blocks may not. The
//! `apex-bench` lines are checked by `bench/tests/doc_commands.rs`.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};

use apex::command::Cli;
use apex::preset;
use apex_system_tests::doc_commands::{
    documented, fill, is_placeholder, preset_path, subcommand, variables, Tool,
};
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Parses one apex command line as `main` does; `Err` says why not.
fn parse(args: &[String], inline: bool) -> Result<(), String> {
    let command = preset::command::<Cli>(args).map_err(|e| format!("preset: {e}"))?;
    match command.try_get_matches_from(args) {
        Ok(m) => Cli::from_arg_matches(&m)
            .map(|_| ())
            .map_err(|e| e.render().to_string()),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(()),
            ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                if inline =>
            {
                Ok(())
            }
            _ => Err(e.render().to_string()),
        },
    }
}

#[test]
fn every_documented_command_line_parses() {
    let root = root();
    // Relative paths in the docs (presets, run folders) are the root's.
    std::env::set_current_dir(&root).unwrap();
    // The docs' lines alone decide: no APEX_* setting of this shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("APEX_") {
            std::env::remove_var(k);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let default_preset = dir.path().join("my-preset.toml");
    std::fs::copy(root.join("presets/apex-atari.toml"), &default_preset)
        .expect("presets/apex-atari.toml, the default preset");
    let top = Cli::command();
    let renamed: Vec<&str> = preset::RENAMED_VARIABLES
        .iter()
        .map(|(old, _)| *old)
        .collect();

    let mut checked = 0;
    let mut failures = Vec::new();
    for d in documented(&root) {
        let (found, at) = (&d.found, &d.at);
        if found.tool != Tool::Apex {
            continue;
        }
        // `apex <command> --help`, `apex --help`: no command named.
        if found.args.is_empty()
            || found.args[0].starts_with('<')
            || (found.args[0].starts_with('-') && d.inline)
        {
            continue;
        }
        let mut args = vec!["apex".to_owned()];
        args.extend(fill(&top, &found.args, &default_preset));
        // Variables before the command: each must be one that command
        // reads (or an old name still accepted).
        let (cmd, _) = subcommand(&top, &args[1..]);
        let mut known = Vec::new();
        variables(cmd, &mut known);
        let mut problem = None;
        for (k, _) in &found.vars {
            if k.starts_with("APEX_") && !known.contains(k) && !renamed.contains(&k.as_str()) {
                problem = Some(format!(
                    "{k} is not a variable of `apex {}`",
                    cmd.get_name()
                ));
            }
        }
        for (k, v) in &found.vars {
            if k.starts_with("APEX_") {
                let v = if is_placeholder(v) {
                    "1".to_owned()
                } else {
                    v.clone()
                };
                std::env::set_var(
                    k,
                    preset_path(
                        if k == "APEX_PRESET" { "preset" } else { "" },
                        v,
                        &default_preset,
                    ),
                );
            }
        }
        let result = match problem {
            Some(p) => Err(p),
            None => parse(&args, d.inline),
        };
        for (k, _) in &found.vars {
            std::env::remove_var(k);
        }
        checked += 1;
        if let Err(e) = result {
            failures.push(format!(
                "{at}\n    parsed as: {}\n    {}",
                args.join(" "),
                e.trim().replace('\n', "\n    ")
            ));
        }
    }
    // The check can fail: a flag that does not exist is refused.
    let bad: Vec<String> = ["apex", "local", "--no-such-flag", "10"]
        .map(String::from)
        .to_vec();
    assert!(parse(&bad, false).is_err(), "an unknown flag parsed");
    eprintln!("doc_commands: {checked} apex command lines parsed");
    assert!(
        checked >= 20,
        "only {checked} apex command lines found in the docs: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "{} documented command line(s) do not parse:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
