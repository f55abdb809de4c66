//! The command lines the documentation shows, found for the tests that
//! parse them with the real parsers (`cli/tests/doc_commands.rs` for
//! `apex`, `bench/tests/doc_commands.rs` for `apex-bench`): README.md,
//! docs/*.md and deploy/README.md, in code blocks (fenced or indented) and
//! in inline code, whether written `apex`, `./apex`, `target/release/apex`
//! or `cargo run ... -p apex --`.
//!
//! Placeholders get a value the flag accepts: `<...>` and all-capital words
//! (`--actor-index I`); `<...>` inside a word becomes `x`; `[--opt V]` is
//! read as `--opt V`; `...` is dropped. A `--preset` file that does not
//! exist (`my.toml`) is replaced by a given preset file.

use std::path::{Path, PathBuf};

/// The documents checked, relative to the root.
pub fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .map(|p| PathBuf::from("docs").join(p.file_name().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    files.extend(docs);
    files.push(PathBuf::from("deploy/README.md"));
    files
}

/// One command line found in a document.
pub struct Documented {
    /// `file:line: text`, for messages.
    pub at: String,
    pub inline: bool,
    pub found: Found,
}

/// Every `apex` and `apex-bench` command line of the documents under `root`.
pub fn documented(root: &Path) -> Vec<Documented> {
    let mut out = Vec::new();
    for file in documents(root) {
        let text = std::fs::read_to_string(root.join(&file))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file.to_string_lossy().into_owned();
        for s in snippets(&name, &text) {
            for found in commands(&words(&s.text)) {
                out.push(Documented {
                    at: format!("{}:{}: {}", s.file, s.line, s.text),
                    inline: s.inline,
                    found,
                });
            }
        }
    }
    out
}

/// One piece of shell text found in a document.
pub struct Snippet {
    pub file: String,
    pub line: usize,
    pub text: String,
    /// Inline code, which may leave out required arguments.
    pub inline: bool,
}

/// Code lines (fenced or indented blocks, continuation lines joined) and
/// inline code spans of a Markdown text.
pub fn snippets(file: &str, text: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    let mut prev_blank = true;
    let mut in_indented = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim_start();
        if let Some(f) = &fence {
            if trimmed.starts_with(f.as_str()) {
                fence = None;
                continue;
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(trimmed[..3].to_owned());
            prev_blank = false;
            continue;
        }
        let indented = fence.is_none()
            && raw.starts_with("    ")
            && !trimmed.is_empty()
            && (prev_blank || in_indented);
        in_indented = indented || (in_indented && raw.trim().is_empty());
        if fence.is_some() || indented {
            let line = raw.trim();
            let (start, mut joined) = pending.take().unwrap_or((n, String::new()));
            if let Some(head) = line.strip_suffix('\\') {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            } else {
                joined.push_str(line);
                out.push(Snippet {
                    file: file.to_owned(),
                    line: start,
                    text: joined,
                    inline: false,
                });
            }
        } else {
            for span in inline_code(raw) {
                out.push(Snippet {
                    file: file.to_owned(),
                    line: n,
                    text: span,
                    inline: true,
                });
            }
        }
        prev_blank = raw.trim().is_empty();
    }
    out
}

/// The contents of the single-backtick spans of one line.
fn inline_code(line: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        match after.find('`') {
            Some(end) => {
                spans.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    spans
}

/// Shell words of a line, with `|`, `&&`, `||` and `;` as words of their
/// own; quotes removed, comments (` #...`) dropped.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut has_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            Some(_) => word.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    has_word = true;
                }
                '\\' => {
                    if let Some(n) = chars.next() {
                        word.push(n);
                        has_word = true;
                    }
                }
                '#' if !has_word => break,
                ' ' | '\t' => {
                    if has_word {
                        out.push(std::mem::take(&mut word));
                        has_word = false;
                    }
                }
                '|' | '&' | ';' => {
                    if has_word {
                        out.push(std::mem::take(&mut word));
                        has_word = false;
                    }
                    let mut op = c.to_string();
                    if chars.peek() == Some(&c) {
                        op.push(chars.next().unwrap());
                    }
                    out.push(op);
                }
                _ => {
                    word.push(c);
                    has_word = true;
                }
            },
        }
    }
    if has_word {
        out.push(word);
    }
    out
}

/// The two programs whose command lines the documents show.
#[derive(PartialEq, Eq, Debug, Clone, Copy)]
pub enum Tool {
    Apex,
    Bench,
}

/// A command of a snippet: which tool, its variables and its arguments.
pub struct Found {
    pub tool: Tool,
    pub vars: Vec<(String, String)>,
    pub args: Vec<String>,
}

fn is_var_assignment(w: &str) -> Option<(String, String)> {
    let (k, v) = w.split_once('=')?;
    (!k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    .then(|| (k.to_owned(), v.to_owned()))
}

fn tool_of(w: &str) -> Option<Tool> {
    let name = w
        .strip_prefix("./")
        .or_else(|| w.strip_prefix("target/release/"))
        .or_else(|| w.strip_prefix("target/debug/"))
        .unwrap_or(w);
    match name {
        "apex" => Some(Tool::Apex),
        "apex-bench" => Some(Tool::Bench),
        _ => None,
    }
}

/// The apex and apex-bench commands in one snippet's words.
pub fn commands(words: &[String]) -> Vec<Found> {
    let mut out = Vec::new();
    for segment in words.split(|w| matches!(w.as_str(), "|" | "||" | "&&" | "&" | ";")) {
        let mut i = 0;
        let mut vars = Vec::new();
        while i < segment.len() {
            if let Some(v) = is_var_assignment(&segment[i]) {
                vars.push(v);
                i += 1;
            } else {
                break;
            }
        }
        // Wrappers: `timeout [-s SIG] DURATION cmd`, `nice [-n N] cmd`.
        if segment.get(i).map(String::as_str) == Some("timeout") {
            i += 1;
            while segment.get(i).is_some_and(|w| w.starts_with('-')) {
                i += if segment[i] == "-s" || segment[i] == "-k" {
                    2
                } else {
                    1
                };
            }
            i += 1;
        }
        if segment.get(i).map(String::as_str) == Some("nice") {
            i += 1;
            while segment.get(i).is_some_and(|w| w.starts_with('-')) {
                i += if segment[i] == "-n" { 2 } else { 1 };
            }
        }
        let Some(first) = segment.get(i) else {
            continue;
        };
        if let Some(tool) = tool_of(first) {
            out.push(Found {
                tool,
                vars,
                args: segment[i + 1..].to_vec(),
            });
        } else if first == "cargo" && segment.get(i + 1).map(String::as_str) == Some("run") {
            // cargo run [--release] -p apex[-bench] -- ARGS
            let rest = &segment[i + 2..];
            let package = rest
                .iter()
                .position(|w| w == "-p" || w == "--package")
                .and_then(|p| rest.get(p + 1));
            let tool = match package.map(String::as_str) {
                Some("apex") => Tool::Apex,
                Some("apex-bench") => Tool::Bench,
                _ => continue,
            };
            let args = rest
                .iter()
                .position(|w| w == "--")
                .map(|p| rest[p + 1..].to_vec())
                .unwrap_or_default();
            out.push(Found { tool, vars, args });
        }
    }
    out
}

pub fn is_placeholder(w: &str) -> bool {
    (w.starts_with('<') && w.ends_with('>'))
        || (w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && w.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
}

/// `s` with every `<...>` replaced by `x`.
fn fill_inner(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(a) = rest.find('<') {
        match rest[a..].find('>') {
            Some(b) => {
                out.push_str(&rest[..a]);
                out.push('x');
                rest = &rest[a + b + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// Whether `arg`'s parser takes `text` (the flag alone, none of its ties).
fn accepts(arg: &clap::Arg, text: &str) -> bool {
    let leak = |s: &str| &*String::leak(s.to_owned());
    let mut bare = clap::Arg::new("value")
        .long("value")
        .action(clap::ArgAction::Set)
        .value_parser(arg.get_value_parser().clone());
    if let Some(d) = arg.get_value_delimiter() {
        bare = bare.value_delimiter(d);
    }
    clap::Command::new("probe")
        .arg(bare)
        .try_get_matches_from(["probe", "--value", leak(text)])
        .is_ok()
}

/// A value `arg` accepts, for a placeholder.
fn dummy_for(arg: Option<&clap::Arg>) -> String {
    const CANDIDATES: &[&str] = &[
        "1",
        "0.5",
        "x",
        "v4",
        "breakout",
        "127.0.0.1:1",
        "http://127.0.0.1:1",
    ];
    let Some(arg) = arg else {
        return "x".to_owned();
    };
    if let Some(p) = arg.get_possible_values().first() {
        return p.get_name().to_owned();
    }
    CANDIDATES
        .iter()
        .find(|c| accepts(arg, c))
        .map_or_else(|| "x".to_owned(), |c| (*c).to_owned())
}

/// The subcommand `args` name (nested ones too), and how many words name it.
pub fn subcommand<'a>(top: &'a clap::Command, args: &[String]) -> (&'a clap::Command, usize) {
    let mut cmd = top;
    let mut used = 0;
    for a in args {
        match cmd.find_subcommand(a) {
            Some(sub) => {
                cmd = sub;
                used += 1;
            }
            None => break,
        }
    }
    (cmd, used)
}

fn find_long<'a>(cmd: &'a clap::Command, long: &str) -> Option<&'a clap::Arg> {
    cmd.get_arguments().find(|a| a.get_long() == Some(long))
}

/// Every `APEX_*` variable the flags of `cmd` and its subcommands read.
pub fn variables(cmd: &clap::Command, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        if let Some(e) = a.get_env() {
            out.push(e.to_string_lossy().into_owned());
        }
    }
    for s in cmd.get_subcommands() {
        variables(s, out);
    }
}

/// The arguments with placeholders filled in, ready to parse.
pub fn fill(top: &clap::Command, args: &[String], default_preset: &Path) -> Vec<String> {
    // [--opt V] is read as --opt V; `...` stands for more of the same.
    let args: Vec<String> = args
        .iter()
        .map(|a| a.trim_start_matches('[').trim_end_matches(']').to_owned())
        .filter(|a| a != "..." && !a.is_empty())
        .collect();
    let (cmd, used) = subcommand(top, &args);
    let mut out: Vec<String> = args[..used].to_vec();
    let positionals: Vec<&clap::Arg> = cmd.get_positionals().collect();
    let mut positional = 0;
    let mut i = used;
    while i < args.len() {
        let a = &args[i];
        if let Some(long) = a.strip_prefix("--") {
            if let Some((name, value)) = long.split_once('=') {
                let arg = find_long(cmd, name);
                let value = if is_placeholder(value) {
                    dummy_for(arg)
                } else {
                    fill_inner(value)
                };
                out.push(format!(
                    "--{name}={}",
                    preset_path(name, value, default_preset)
                ));
                i += 1;
                continue;
            }
            out.push(a.clone());
            let arg = find_long(cmd, long);
            let takes_value = arg.is_some_and(|x| x.get_action().takes_values());
            if takes_value {
                if let Some(v) = args.get(i + 1) {
                    let v = if is_placeholder(v) {
                        dummy_for(arg)
                    } else {
                        fill_inner(v)
                    };
                    out.push(preset_path(long, v, default_preset));
                    i += 2;
                    continue;
                }
            }
            i += 1;
        } else if a.starts_with('-') {
            out.push(a.clone());
            i += 1;
        } else {
            let arg = positionals.get(positional).copied();
            positional += 1;
            out.push(if is_placeholder(a) {
                dummy_for(arg)
            } else {
                fill_inner(a)
            });
            i += 1;
        }
    }
    out
}

/// A `--preset` file that does not exist becomes the default preset's text.
pub fn preset_path(flag: &str, value: String, default_preset: &Path) -> String {
    let is_file = value.contains('/') || value.ends_with(".toml");
    if flag == "preset" && is_file && !Path::new(&value).exists() {
        default_preset.to_string_lossy().into_owned()
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extraction_reads_what_the_docs_write() {
        let text = "Run `./apex local --game pong` or:\n\n```sh\nAPEX_BATCH_SIZE=64 ./apex local \\\n  --learning-rate 1e-4   # a comment\ncargo run --release -p apex-bench -- env\n```\n\n    apex eval --checkpoint runs/<run>/checkpoint.ot\n";
        let s = snippets("t.md", text);
        let found: Vec<(usize, bool, Vec<String>)> = s
            .iter()
            .flat_map(|s| {
                commands(&words(&s.text))
                    .into_iter()
                    .map(move |f| (s.line, s.inline, f.args))
            })
            .collect();
        assert_eq!(
            found.len(),
            4,
            "{:?}",
            found.iter().map(|f| &f.2).collect::<Vec<_>>()
        );
        assert_eq!(found[0].2, ["local", "--game", "pong"]);
        assert!(found[0].1);
        assert_eq!(found[1].0, 4);
        assert_eq!(found[1].2, ["local", "--learning-rate", "1e-4"]);
        assert_eq!(found[2].2, ["env"]);
        assert_eq!(
            found[3].2,
            ["eval", "--checkpoint", "runs/<run>/checkpoint.ot"]
        );
        let c = commands(&words("APEX_BATCH_SIZE=64 ./apex local"));
        assert_eq!(c[0].vars, [("APEX_BATCH_SIZE".to_owned(), "64".to_owned())]);
    }
}
