//! `plot`: the PNG figures of `docs/benchmarks.md`, drawn from
//! `target/bench/report.json` (written by `cargo xtask bench`) and
//! `target/bench/catchup.json` (written by `cargo xtask bench catchup`).
//!
//! Text is rendered with an embedded DejaVu Sans (the `dejavu` crate) through
//! plotters' `ab_glyph` backend, so drawing needs no system font library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Deserialize;

/// `plot` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true)))]
pub struct PlotArgs {
    /// The report written by `cargo xtask bench` (every figure but catchup.png).
    #[arg(long, value_name = "FILE", group = "input")]
    report: Option<PathBuf>,
    /// The report written by `cargo xtask bench catchup` (catchup.png).
    #[arg(long, value_name = "FILE", group = "input")]
    catchup: Option<PathBuf>,
    /// Directory for the PNG files (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

// The parts of the report the figures need; the rest is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Report {
    throughput: Vec<LoadPoint>,
    failover: Vec<Failover>,
    persist: Persist,
    restart: Vec<RestartPoint>,
    soak: Vec<Soak>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoadPoint {
    driver: String,
    op: String,
    clients: u32,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Failover {
    driver: String,
    samples_ms: Vec<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Persist {
    limit: Limit,
    drivers: Vec<PersistPoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Limit {
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PersistPoint {
    driver: String,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RestartPoint {
    driver: String,
    snapshots: bool,
    entries: u64,
    serving_ms: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Soak {
    driver: String,
    samples: Vec<SoakSample>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SoakSample {
    t_s: f64,
    rss_mib: f64,
    data_mib: f64,
}

// The catch-up report's parts the figure needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Catchup {
    points: Vec<CatchupPoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CatchupPoint {
    keys: u64,
    status_up_ms: f64,
    catchup_ms: f64,
}

/// Named lines: a colour and (x, y) points each.
type Series = BTreeMap<String, (RGBColor, Vec<(f64, f64)>)>;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 540;
const FONT: &str = "sans-serif";

/// `c` blended towards white by `f` (0: unchanged, 1: white).
fn lighten(c: RGBColor, f: f64) -> RGBColor {
    let mix = |v: u8| (f64::from(v) + (255.0 - f64::from(v)) * f).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// A fixed colour per driver, the same in every figure.
fn colour(driver: &str) -> RGBColor {
    match driver {
        "paxos" => RGBColor(0, 114, 178),
        "file" => RGBColor(0, 158, 115),
        "openraft" => RGBColor(213, 94, 0),
        // A variant of this driver (another timing): a lighter blue.
        d if d.starts_with("paxos") => RGBColor(86, 180, 233),
        _ => RGBColor(120, 120, 120),
    }
}

pub fn run(args: &PlotArgs) -> Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the embedded DejaVu Sans font did not load"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    if let Some(path) = &args.catchup {
        let report: Catchup = read(path)?;
        catchup(&report, &args.out.join("catchup.png"))?;
    }
    let Some(path) = &args.report else {
        return Ok(());
    };
    let report: Report = read(path)?;
    for (op, what) in [("ts", "get_ts"), ("seq", "dense get_seq")] {
        throughput(
            &report,
            op,
            what,
            &args.out.join(format!("throughput_{op}.png")),
        )?;
        latency(
            &report,
            op,
            what,
            &args.out.join(format!("latency_{op}.png")),
        )?;
    }
    failover(&report, &args.out.join("failover.png"))?;
    persist(&report, &args.out.join("persist.png"))?;
    restart(&report, &args.out.join("restart.png"))?;
    soak(&report, &args.out.join("soak.png"))?;
    Ok(())
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a benchmark report", path.display()))
}

fn draw_err<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing failed: {err:?}")
}

/// Lines of (x, y) per series on a log-x, linear-y chart.
fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &Series,
    log_x: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let points = series.values().flat_map(|(_, p)| p.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    if x_min > x_max {
        (x_min, x_max) = (1.0, 10.0);
    }
    if x_min == x_max {
        x_max = x_min + 1.0;
    }
    let y_top = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80);
    if log_x {
        let mut chart = builder
            .build_cartesian_2d((x_min * 0.8..x_max * 1.25).log_scale(), 0.0..y_top)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .x_label_formatter(&|x| format_count(*x))
            .draw()
            .map_err(draw_err)?;
        draw_series(&mut chart, series, 3, true)?;
    } else {
        let mut chart = builder
            .build_cartesian_2d(x_min..x_max, 0.0..y_top)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(draw_err)?;
        draw_series(&mut chart, series, 2, false)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Draws each series as a line of `width` (with a dot at each point when
/// `dots`) and the legend, on a chart with a linear or log x axis.
fn draw_series<'a, X>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    series: &Series,
    width: u32,
    dots: bool,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
{
    for (name, (c, pts)) in series {
        let c = *c;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(width)))
            .map_err(draw_err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        if dots {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
                .map_err(draw_err)?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

fn format_count(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.0}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn by_driver<'a>(
    points: impl Iterator<Item = &'a LoadPoint>,
    y: impl Fn(&LoadPoint) -> f64,
) -> Series {
    let mut series = Series::new();
    for p in points {
        series
            .entry(p.driver.clone())
            .or_insert_with(|| (colour(&p.driver), Vec::new()))
            .1
            .push((f64::from(p.clients), y(p)));
    }
    for (_, pts) in series.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

fn throughput(report: &Report, op: &str, what: &str, path: &Path) -> Result<()> {
    let series = by_driver(report.throughput.iter().filter(|p| p.op == op), |p| {
        p.ops_per_s
    });
    lines(
        path,
        &format!("{what}: throughput"),
        "concurrent clients",
        "operations per second",
        &series,
        true,
    )
}

fn latency(report: &Report, op: &str, what: &str, path: &Path) -> Result<()> {
    let mut series = BTreeMap::new();
    for (q, pick) in [("p50", true), ("p99", false)] {
        let s = by_driver(report.throughput.iter().filter(|p| p.op == op), |p| {
            if pick { p.p50_ms } else { p.p99_ms }
        });
        for (driver, (c, pts)) in s {
            let c = if pick { lighten(c, 0.55) } else { c };
            series.insert(format!("{driver} {q}"), (c, pts));
        }
    }
    lines(
        path,
        &format!("{what}: latency (p50 lighter, p99 darker)"),
        "concurrent clients",
        "latency, ms",
        &series,
        true,
    )
}

fn failover(report: &Report, path: &Path) -> Result<()> {
    let mut series = BTreeMap::new();
    for f in &report.failover {
        let mut sorted = f.samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let pts = sorted
            .iter()
            .enumerate()
            .map(|(i, &ms)| ((i as f64 + 1.0) / n * 100.0, ms))
            .collect();
        series.insert(f.driver.clone(), (colour(&f.driver), pts));
    }
    lines(
        path,
        "Failover: unavailability after a leader kill -9 (sorted)",
        "percent of kills at or below",
        "unavailability, ms",
        &series,
        false,
    )
}

fn restart(report: &Report, path: &Path) -> Result<()> {
    let mut series = Series::new();
    // The file driver has no log; its single restart is in the table.
    for r in report.restart.iter().filter(|r| r.driver != "file") {
        let name = format!(
            "{} {}",
            r.driver,
            if r.snapshots {
                "with snapshots"
            } else {
                "no snapshots"
            }
        );
        let c = if r.snapshots {
            colour(&r.driver)
        } else {
            lighten(colour(&r.driver), 0.5)
        };
        series
            .entry(name)
            .or_insert_with(|| (c, Vec::new()))
            .1
            .push((r.entries as f64, r.serving_ms));
    }
    for (_, pts) in series.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    lines(
        path,
        "Restart to serving against log length",
        "log entries before the restart",
        "restart to first timestamp, ms",
        &series,
        true,
    )
}

fn catchup(report: &Catchup, path: &Path) -> Result<()> {
    let mut points: Vec<&CatchupPoint> = report.points.iter().collect();
    points.sort_by_key(|p| p.keys);
    let c = colour("paxos");
    let mut series = Series::new();
    series.insert(
        "paxos: restart to caught up".to_owned(),
        (
            c,
            points
                .iter()
                .map(|p| (p.keys as f64, p.catchup_ms / 1e3))
                .collect(),
        ),
    );
    // The floor under every point: the process start and RocksDB open.
    series.insert(
        "paxos: restart to status page up".to_owned(),
        (
            lighten(c, 0.55),
            points
                .iter()
                .map(|p| (p.keys as f64, p.status_up_ms / 1e3))
                .collect(),
        ),
    );
    lines(
        path,
        "Catch-up of a restarted follower against state size",
        "distinct dense keys in the state",
        "seconds from the follower's restart",
        &series,
        true,
    )
}

fn soak(report: &Report, path: &Path) -> Result<()> {
    let mut series = BTreeMap::new();
    for s in &report.soak {
        let c = colour(&s.driver);
        let light = lighten(c, 0.5);
        series.insert(
            format!("{} RSS of all nodes, MiB", s.driver),
            (c, s.samples.iter().map(|x| (x.t_s, x.rss_mib)).collect()),
        );
        series.insert(
            format!("{} data directories, MiB", s.driver),
            (
                light,
                s.samples.iter().map(|x| (x.t_s, x.data_mib)).collect(),
            ),
        );
    }
    lines(
        path,
        "Soak: memory and disk",
        "seconds",
        "MiB",
        &series,
        false,
    )
}

fn persist(report: &Report, path: &Path) -> Result<()> {
    let mut bars: Vec<(String, f64, f64, RGBColor)> = vec![(
        "machine limit".to_owned(),
        report.persist.limit.p50_ms,
        report.persist.limit.p99_ms,
        RGBColor(110, 110, 110),
    )];
    for d in &report.persist.drivers {
        bars.push((d.driver.clone(), d.p50_ms, d.p99_ms, colour(&d.driver)));
    }
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let top = bars
        .iter()
        .map(|b| b.2.max(b.1))
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.2;
    let n = bars.len();
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "persist_high_water commit latency (p50 solid, p99 outline)",
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 0.01 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("latency, ms")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(draw_err)?;
    for (i, (_, p50, p99, c)) in bars.iter().enumerate() {
        let x = i as f64;
        chart
            .draw_series([
                Rectangle::new([(x + 0.2, 0.0), (x + 0.8, *p99)], c.stroke_width(2)),
                Rectangle::new([(x + 0.2, 0.0), (x + 0.8, *p50)], c.filled()),
            ])
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}
