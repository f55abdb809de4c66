//! Every `apex-bench ...` command line the documentation shows parses with
//! the harness's own command line (found and filled in as
//! `apex_system_tests::doc_commands` says); nothing runs. The `apex` lines
//! are checked by `cli/tests/doc_commands.rs`.

use std::path::Path;

use apex_bench::Cli;
use apex_system_tests::doc_commands::{documented, fill, Tool};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

/// Inline code may name a harness in a sentence without its required
/// arguments (`apex-bench learner-input`); code blocks may not.
fn parse(args: &[String], inline: bool) -> Result<(), String> {
    match Cli::try_parse_from(args) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp => Ok(()),
            ErrorKind::MissingRequiredArgument if inline => Ok(()),
            _ => Err(e.render().to_string()),
        },
    }
}

#[test]
fn every_documented_bench_line_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let top = Cli::command();
    // The harness takes no presets; a --preset line would fail to parse.
    let no_preset = root.join("presets/apex-atari.toml");
    let mut checked = 0;
    let mut failures = Vec::new();
    for d in documented(root) {
        if d.found.tool != Tool::Bench {
            continue;
        }
        // `apex-bench --help` names no harness.
        if d.found.args.is_empty() || d.found.args[0].starts_with('-') {
            continue;
        }
        let mut args = vec!["apex-bench".to_owned()];
        args.extend(fill(&top, &d.found.args, &no_preset));
        checked += 1;
        if let Err(e) = parse(&args, d.inline) {
            failures.push(format!(
                "{}\n    parsed as: {}\n    {}",
                d.at,
                args.join(" "),
                e.trim().replace('\n', "\n    ")
            ));
        }
    }
    // The check can fail: an unknown harness or flag is refused.
    let bad = |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>(), true);
    assert!(bad(&["apex-bench", "no-such-harness"]).is_err());
    assert!(bad(&["apex-bench", "env", "--no-such-flag"]).is_err());
    assert!(parse(&["apex-bench".into(), "learner-input".into()], false).is_err());
    eprintln!("doc_commands: {checked} apex-bench command lines parsed");
    assert!(
        checked >= 1,
        "no apex-bench command line found in the docs: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "{} documented apex-bench line(s) do not parse:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
