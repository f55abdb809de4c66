//! `apex plot` end to end: a PNG of the right size from a run folder's CSV
//! files, and one clear line with exit 1 when there is nothing to plot.

use std::path::Path;
use std::process::Output;

mod common;

use common::assert_clear_failure;

fn apex(args: &[&Path]) -> Output {
    let mut all: Vec<&std::ffi::OsStr> = vec!["plot".as_ref()];
    all.extend(args.iter().map(|p| p.as_os_str()));
    common::apex(&all)
}

fn png_size(path: &Path) -> (u32, u32) {
    let (width, height, _) = png_pixels(path);
    (width, height)
}

/// Width, height and RGB pixels of a PNG that is not blank.
fn png_pixels(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert!(
        pixels.iter().any(|&p| p < 128),
        "the image is blank: nothing was drawn"
    );
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

const EVAL: &str =
    "env_frames,wall_seconds,weights_version,updates,protocol,episodes,mean,std,median,min,max
40000,60.0,3,100,v4,10,1.200,0.800,1.000,0.000,3.000
40000,62.0,3,100,v5,10,0.900,0.700,1.000,0.000,2.000
80000,120.0,6,200,v4,10,2.500,1.100,2.000,1.000,5.000
80000,125.0,6,200,v5,10,1.600,0.900,1.500,0.000,3.000
,180.0,9,300,v4,10,4.000,1.500,4.000,2.000,7.000
";

fn progress() -> String {
    let mut text = String::from(
        "wall_seconds,env_steps,env_frames,games,episodic_return,episodic_length,updates,loss,mean_q,sps\n",
    );
    for i in 1..=60u64 {
        // Some intervals end no game: an empty return.
        let ret = if i % 7 == 0 {
            String::new()
        } else {
            format!("{:.2}", 1.0 + i as f64 / 20.0)
        };
        text.push_str(&format!(
            "{},{},{},{},{ret},150,{},0.01,0.1,800\n",
            i * 10,
            i * 1000,
            i * 4000,
            i * 2,
            i * 30
        ));
    }
    text
}

#[test]
fn plots_eval_and_progress_to_the_default_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eval.csv"), EVAL).unwrap();
    std::fs::write(dir.path().join("progress.csv"), progress()).unwrap();
    let o = apex(&[dir.path()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_size(&dir.path().join("curve.png")), (1600, 600));
}

#[test]
fn progress_alone_still_plots_to_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("progress.csv"), progress()).unwrap();
    let out = dir.path().join("elsewhere.png");
    let o = apex(&[dir.path(), Path::new("--out"), &out]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_size(&out), (1600, 600));
    assert!(!dir.path().join("curve.png").exists());
}

#[test]
fn missing_or_malformed_inputs_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    assert_clear_failure(&apex(&[&missing]), "does not exist");

    assert_clear_failure(&apex(&[dir.path()]), "no eval.csv or progress.csv");

    std::fs::write(
        dir.path().join("eval.csv"),
        EVAL.replace("2.500,1.100", "x,1.100"),
    )
    .unwrap();
    assert_clear_failure(&apex(&[dir.path()]), "eval.csv line 4: mean is 'x'");
}

/// Pixels of exactly this colour.
fn count_colour(pixels: &[u8], rgb: [u8; 3]) -> usize {
    pixels.chunks_exact(3).filter(|p| *p == rgb).count()
}

#[test]
fn several_runs_overlay_their_evaluations_in_one_picture() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("old-default"),
        dir.path().join("new-default"),
    );
    for (run, scale) in [(&a, 1.0), (&b, 3.0)] {
        std::fs::create_dir(run).unwrap();
        // v4 rows only: in one run's picture v5 is orange, so orange here
        // can only be the second run.
        let eval: String = EVAL
            .lines()
            .enumerate()
            .filter(|(i, line)| *i == 0 || line.contains(",v4,"))
            .map(|(i, line)| match i {
                0 => format!("{line}\n"),
                // Scale the means so the runs' curves differ.
                _ => {
                    let mut f: Vec<String> = line.split(',').map(String::from).collect();
                    f[6] = format!("{:.3}", f[6].parse::<f64>().unwrap() * scale);
                    format!("{}\n", f.join(","))
                }
            })
            .collect();
        std::fs::write(run.join("eval.csv"), eval).unwrap();
    }
    let out = dir.path().join("cmp.png");
    let o = apex(&[&a, &b, Path::new("--out"), &out]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("cmp.png"));
    let (width, height, pixels) = png_pixels(&out);
    assert_eq!((width, height), (1600, 600));
    // Each run is drawn in its own colour (the first two of the palette).
    for colour in [[31, 119, 180], [255, 127, 14]] {
        assert!(
            count_colour(&pixels, colour) > 200,
            "no series in {colour:?}"
        );
    }

    // A run without evaluations cannot be compared: one clear line.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_clear_failure(
        &apex(&[&a, &empty, Path::new("--out"), &out]),
        "no eval.csv in",
    );
}
