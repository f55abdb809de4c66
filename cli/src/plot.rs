//! `apex plot`: a run folder's learning curves as one PNG, two panels side by
//! side (score against env frames, score against wall time), each with the
//! evaluator's mean raw score per protocol and the exploring actors'
//! smoothed training return. Given several run folders it overlays their
//! evaluation curves instead, one colour per run and one line style per
//! protocol, each series labelled with its run folder and protocol.
//!
//! Text is drawn with a TrueType font read at run time (DejaVu Sans), so the
//! binary needs no fontconfig or freetype libraries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use apex_run_folder::{EvalRow, ProgressRow, EVAL_CSV, PROGRESS_CSV};
use clap::Args;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

#[derive(Args)]
pub struct PlotArgs {
    /// Run folders. One: its eval.csv and progress.csv are plotted. Several:
    /// their eval.csv curves are overlaid, to compare runs.
    #[arg(required = true, num_args = 1..)]
    pub run_dirs: Vec<PathBuf>,
    /// Where to write the PNG [default: RUN_DIR/curve.png for one run,
    /// compare.png for several].
    #[arg(long, env = "APEX_OUT")]
    pub out: Option<PathBuf>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let path = match args.run_dirs.as_slice() {
        [one] => plot(one, &args.out.unwrap_or_else(|| one.join("curve.png")))?,
        several => compare(
            several,
            &args.out.unwrap_or_else(|| PathBuf::from("compare.png")),
        )?,
    };
    println!("wrote {}", path.display());
    Ok(())
}

/// Size of the whole image; each panel takes half the width.
const WIDTH: u32 = 1600;
const HEIGHT: u32 = 600;

/// Where distributions put DejaVu Sans (Debian first: that is what setup.sh installs).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn check_run_dir(run_dir: &Path) -> Result<()> {
    if !run_dir.is_dir() {
        bail!(
            "run folder {} does not exist: pass a folder that apex local wrote (runs/<game>-<protocol>-<time>)",
            run_dir.display()
        );
    }
    Ok(())
}

/// Reads `run_dir`'s CSV files and writes the curves to `out` as a PNG.
pub fn plot(run_dir: &Path, out: &Path) -> Result<PathBuf> {
    let eval_path = run_dir.join(EVAL_CSV);
    let progress_path = run_dir.join(PROGRESS_CSV);
    check_run_dir(run_dir)?;
    if !eval_path.exists() && !progress_path.exists() {
        bail!(
            "no {EVAL_CSV} or {PROGRESS_CSV} in {}: train there with apex local --run-dir, or score a checkpoint with apex eval",
            run_dir.display()
        );
    }
    let eval = if eval_path.exists() {
        read_eval(&eval_path)?
    } else {
        tracing::warn!(
            "no {EVAL_CSV} in {}: plotting training returns only (run apex local with evaluation on, or apex eval)",
            run_dir.display()
        );
        Vec::new()
    };
    let progress = if progress_path.exists() {
        read_progress(&progress_path)?
    } else {
        Vec::new()
    };
    let curves = Curves::new(&eval, &progress);
    if curves.is_empty() {
        bail!(
            "{} has no scores yet: wait for the first evaluation round or finished training game, then plot again",
            run_dir.display()
        );
    }

    register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let title = run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        draw_panel(
            &left,
            &format!("{title}: score by env frames"),
            "env frames (emulator frames)",
            &curves,
            Axis::Frames,
        )?;
        draw_panel(
            &right,
            &format!("{title}: score by wall time"),
            "wall time (minutes)",
            &curves,
            Axis::Minutes,
        )?;
        root.present().map_err(draw_err)?;
    }
    write_png(out, &pixels)?;
    Ok(out.to_path_buf())
}

/// One run's evaluation curves in a comparison, and the name they go by.
struct Run {
    name: String,
    eval: BTreeMap<String, Series>,
}

/// Reads each run folder's eval.csv and writes their curves, overlaid, to
/// `out` as a PNG.
pub fn compare(run_dirs: &[PathBuf], out: &Path) -> Result<PathBuf> {
    let names = run_names(run_dirs);
    let mut runs = Vec::with_capacity(run_dirs.len());
    for (dir, name) in run_dirs.iter().zip(names) {
        check_run_dir(dir)?;
        let path = dir.join(EVAL_CSV);
        if !path.exists() {
            bail!(
                "no {EVAL_CSV} in {}: runs are compared by their evaluations; train with apex local (evaluation on) or score a checkpoint with apex eval",
                dir.display()
            );
        }
        let eval = Curves::new(&read_eval(&path)?, &[]).eval;
        if eval.values().all(Vec::is_empty) {
            bail!(
                "{} has no evaluation rounds yet: wait for the first one, then plot again",
                path.display()
            );
        }
        runs.push(Run { name, eval });
    }
    register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        draw_comparison(
            &left,
            "evaluation by env frames",
            "env frames (emulator frames)",
            &runs,
            Axis::Frames,
        )?;
        draw_comparison(
            &right,
            "evaluation by wall time",
            "wall time (minutes)",
            &runs,
            Axis::Minutes,
        )?;
        root.present().map_err(draw_err)?;
    }
    write_png(out, &pixels)?;
    Ok(out.to_path_buf())
}

/// Each run by its folder's name, or by its whole path where two runs'
/// folders share a name.
fn run_names(run_dirs: &[PathBuf]) -> Vec<String> {
    let short = |d: &PathBuf| {
        d.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.display().to_string())
    };
    run_dirs
        .iter()
        .map(|d| {
            let clash = run_dirs.iter().filter(|o| short(o) == short(d)).count() > 1;
            if clash {
                d.display().to_string()
            } else {
                short(d)
            }
        })
        .collect()
}

/// The labelled series of a comparison, in drawing order: per run, per
/// protocol (v4 before v5).
fn comparison_labels(runs: &[Run]) -> Vec<String> {
    runs.iter()
        .flat_map(|r| r.eval.keys().map(move |p| format!("{} {p}", r.name)))
        .collect()
}

fn draw_comparison(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    x_desc: &str,
    runs: &[Run],
    axis: Axis,
) -> Result<()> {
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .flat_map(|r| r.eval.values())
        .map(|s| {
            on_axis(s, axis)
                .into_iter()
                .map(|(x, y, _)| (x, y))
                .collect()
        })
        .collect();
    let mut chart = chart(
        area,
        caption,
        x_desc,
        axis,
        series.iter().flatten().copied(),
    )?;
    let labels = comparison_labels(runs);
    // The first protocol of all runs (v4 where there is one) solid, the others dashed.
    let first = runs.iter().flat_map(|r| r.eval.keys()).min();
    let styles = runs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.eval.keys().map(move |p| (i, Some(p) == first)));
    for ((points, label), (run, solid)) in series.iter().zip(labels).zip(styles) {
        if points.is_empty() {
            continue;
        }
        let colour = run_colour(run);
        let style = colour.stroke_width(2);
        if solid {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(draw_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        } else {
            chart
                .draw_series(DashedLineSeries::new(points.iter().copied(), 8, 5, style))
                .map_err(draw_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], style));
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(draw_err)?;
    }
    legend(&mut chart)
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot failed: {e}")
}

/// Plotters keeps fonts for the life of the process: read and register once.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = FONT_PATHS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or_else(|| {
                    format!(
                        "no DejaVu Sans font at {}: install the fonts-dejavu-core package \
                         (scripts/setup.sh does as root: apt-get install fonts-dejavu-core)",
                        FONT_PATHS[0]
                    )
                })?;
            let bytes = std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read {} ({e}): reinstall the fonts-dejavu-core package",
                    path.display()
                )
            })?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| {
                format!(
                    "{} is not a usable TrueType font: reinstall the fonts-dejavu-core package",
                    path.display()
                )
            })
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn write_png(out: &Path, pixels: &[u8]) -> Result<()> {
    let what_to_do = || {
        format!(
            "cannot write {}: check that its folder exists and is writable, or pass --out",
            out.display()
        )
    };
    let file = std::fs::File::create(out).with_context(what_to_do)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().with_context(what_to_do)?;
    writer.write_image_data(pixels).with_context(what_to_do)?;
    writer.finish().with_context(what_to_do)?;
    Ok(())
}

/// One row of eval.csv.
#[derive(Debug, Clone, PartialEq)]
struct EvalPoint {
    /// Empty in the file when the evaluator did not know the frame count.
    env_frames: Option<f64>,
    wall_seconds: f64,
    protocol: String,
    mean: f64,
    std: f64,
}

/// One row of progress.csv that has a training return.
#[derive(Debug, Clone, PartialEq)]
struct TrainPoint {
    env_frames: Option<f64>,
    wall_seconds: f64,
    episodic_return: f64,
}

fn read_eval(path: &Path) -> Result<Vec<EvalPoint>> {
    apex_run_folder::read::<EvalRow>(path)?
        .into_iter()
        .map(|(line, row)| {
            if row.protocol.is_empty() {
                bail!(
                    "{} line {line}: protocol is empty: fix or delete that line",
                    path.display()
                );
            }
            Ok(EvalPoint {
                env_frames: row.env_frames.map(|f| f as f64),
                wall_seconds: row.wall_seconds,
                protocol: row.protocol,
                mean: row.mean,
                std: row.std,
            })
        })
        .collect()
}

fn read_progress(path: &Path) -> Result<Vec<TrainPoint>> {
    // A row with no training return (no game ended in its interval) has
    // nothing to plot, but was still checked.
    Ok(apex_run_folder::read::<ProgressRow>(path)?
        .into_iter()
        .filter_map(|(_, row)| {
            Some(TrainPoint {
                env_frames: Some(row.env_frames as f64),
                wall_seconds: row.wall_seconds,
                episodic_return: row.episodic_return?,
            })
        })
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    Frames,
    Minutes,
}

/// A series with x on both axes kept: `(frames, minutes, y, std)`.
type Series = Vec<(Option<f64>, f64, f64, f64)>;

/// What both panels draw.
struct Curves {
    /// Per protocol, in name order (v4 before v5).
    eval: BTreeMap<String, Series>,
    /// Smoothed training return.
    train: Series,
    /// The trailing-mean window used for `train`.
    window: usize,
}

impl Curves {
    fn new(eval: &[EvalPoint], progress: &[TrainPoint]) -> Curves {
        let mut by_protocol: BTreeMap<String, Series> = BTreeMap::new();
        for p in eval {
            by_protocol.entry(p.protocol.clone()).or_default().push((
                p.env_frames,
                p.wall_seconds / 60.0,
                p.mean,
                p.std,
            ));
        }
        // About 25 windows over the run: smooth enough to see a trend, short
        // enough to follow it.
        let window = (progress.len() / 25).clamp(1, 50);
        let train = progress
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let from = (i + 1).saturating_sub(window);
                let slice = &progress[from..=i];
                let mean =
                    slice.iter().map(|q| q.episodic_return).sum::<f64>() / slice.len() as f64;
                (p.env_frames, p.wall_seconds / 60.0, mean, 0.0)
            })
            .collect();
        Curves {
            eval: by_protocol,
            train,
            window,
        }
    }

    fn is_empty(&self) -> bool {
        self.train.is_empty() && self.eval.values().all(Vec::is_empty)
    }
}

/// The series' points on one axis (rows without env frames are left out of
/// the frames panel).
fn on_axis(series: &Series, axis: Axis) -> Vec<(f64, f64, f64)> {
    series
        .iter()
        .filter_map(|&(frames, minutes, y, std)| {
            let x = match axis {
                Axis::Frames => frames?,
                Axis::Minutes => minutes,
            };
            Some((x, y, std))
        })
        .collect()
}

fn protocol_colour(i: usize) -> RGBColor {
    // Colour-blind-safe blue and orange, then more for other protocols.
    const COLOURS: [RGBColor; 4] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(214, 39, 40),
    ];
    COLOURS[i % COLOURS.len()]
}

const TRAIN_COLOUR: RGBColor = RGBColor(44, 160, 44);

/// A comparison's colour for its `i`th run: the protocol colours, then
/// green, brown, pink, grey, olive and cyan (ten runs before one repeats).
fn run_colour(i: usize) -> RGBColor {
    const MORE: [RGBColor; 6] = [
        TRAIN_COLOUR,
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    match i % 10 {
        i @ 0..4 => protocol_colour(i),
        i => MORE[i - 4],
    }
}

/// 1234567 as "1.2M": frame counts run into the hundreds of millions.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    x_desc: &str,
    curves: &Curves,
    axis: Axis,
) -> Result<()> {
    let eval: Vec<_> = curves
        .eval
        .iter()
        .map(|(name, s)| (name, on_axis(s, axis)))
        .collect();
    let train = on_axis(&curves.train, axis);
    let all = eval
        .iter()
        .flat_map(|(_, s)| s.iter().flat_map(|&(x, y, sd)| [(x, y - sd), (x, y + sd)]))
        .chain(train.iter().map(|&(x, y, _)| (x, y)));
    let mut chart = chart(area, caption, x_desc, axis, all)?;

    // Bands first, so no line is drawn under another curve's shading.
    for (i, (_, points)) in eval.iter().enumerate() {
        // Mean plus and minus one standard deviation over the round's games.
        if points.len() > 1 && points.iter().any(|p| p.2 > 0.0) {
            let band: Vec<(f64, f64)> = points
                .iter()
                .map(|&(x, y, sd)| (x, y + sd))
                .chain(points.iter().rev().map(|&(x, y, sd)| (x, y - sd)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band,
                    protocol_colour(i).mix(0.15),
                )))
                .map_err(draw_err)?;
        }
    }
    if !train.is_empty() {
        let label = if curves.window > 1 {
            format!("training return (mean of {})", curves.window)
        } else {
            "training return".to_owned()
        };
        chart
            .draw_series(LineSeries::new(
                train.iter().map(|&(x, y, _)| (x, y)),
                TRAIN_COLOUR.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(label)
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], TRAIN_COLOUR.stroke_width(2))
            });
    }
    for (i, (name, points)) in eval.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let colour = protocol_colour(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, y, _)| (x, y)),
                colour.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(format!("eval {name} (mean ± std)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y, _)| Circle::new((x, y), 3, colour.filled())),
            )
            .map_err(draw_err)?;
    }
    legend(&mut chart)
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel's axes, scaled to hold every point with room above for the legend.
fn chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
    x_desc: &str,
    axis: Axis,
    points: impl Iterator<Item = (f64, f64)>,
) -> Result<Chart<'a, 'b>> {
    let (mut x_max, mut y_min, mut y_max) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    // Leave room above the highest point for the legend and never draw an empty range.
    let x_max = if x_max > 0.0 { x_max * 1.02 } else { 1.0 };
    let span = (y_max - y_min).max(1.0);
    let (y_lo, y_hi) = (y_min - 0.02 * span, y_max + 0.25 * span);

    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, y_lo..y_hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("raw score (all lives)")
        .x_label_formatter(&|v| match axis {
            Axis::Frames => short_number(*v),
            Axis::Minutes => format!("{v:.0}"),
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apex_run_folder::Row;

    const EVAL_HEADER: &str = EvalRow::HEADER;
    const PROGRESS_HEADER: &str = ProgressRow::HEADER;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn empty_returns_are_skipped_and_a_partial_last_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            PROGRESS_CSV,
            &format!("{PROGRESS_HEADER}\n10,100,400,0,,,0,,,10\n20,200,800,3,1.5,120,5,0.1,0.2,10\n30,30"),
        );
        let points = read_progress(&path).unwrap();
        assert_eq!(
            points,
            vec![TrainPoint {
                env_frames: Some(800.0),
                wall_seconds: 20.0,
                episodic_return: 1.5
            }]
        );
    }

    #[test]
    fn malformed_fields_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            EVAL_CSV,
            &format!(
                "{EVAL_HEADER}\n400,1.0,1,10,v4,3,2.0,1.0,2,1,3\n800,2.0,2,20,v5,3,abc,1.0,2,1,3\n"
            ),
        );
        let err = read_eval(&path).unwrap_err().to_string();
        assert!(err.contains("eval.csv line 3: mean is 'abc'"), "{err}");
        let path = write(dir.path(), "other.csv", "a,b\n1,2\n");
        let err = read_eval(&path).unwrap_err().to_string();
        assert!(err.contains("no column 'env_frames'"), "{err}");
    }

    #[test]
    fn smoothing_is_a_trailing_mean() {
        let progress: Vec<TrainPoint> = (0..100)
            .map(|i| TrainPoint {
                env_frames: Some(i as f64),
                wall_seconds: i as f64,
                episodic_return: i as f64,
            })
            .collect();
        let c = Curves::new(&[], &progress);
        assert_eq!(c.window, 4);
        assert_eq!(c.train[0].2, 0.0);
        assert_eq!(c.train[10].2, (7.0 + 8.0 + 9.0 + 10.0) / 4.0);
    }

    #[test]
    fn comparisons_label_one_series_per_run_and_protocol() {
        let series = |n: usize| -> Series {
            (0..n)
                .map(|i| (Some(i as f64), i as f64, 1.0, 0.0))
                .collect()
        };
        let run = |name: &str, protocols: &[&str]| Run {
            name: name.into(),
            eval: protocols
                .iter()
                .map(|p| (p.to_string(), series(3)))
                .collect(),
        };
        let runs = [run("old", &["v5", "v4"]), run("new", &["v4"])];
        assert_eq!(comparison_labels(&runs), ["old v4", "old v5", "new v4"]);
        let dirs = [
            PathBuf::from("a/run"),
            PathBuf::from("b/run"),
            PathBuf::from("c/other"),
        ];
        assert_eq!(run_names(&dirs), ["a/run", "b/run", "other"]);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(950.0), "950");
        assert_eq!(short_number(400_000.0), "400k");
        assert_eq!(short_number(2_500_000.0), "2.5M");
    }
}
