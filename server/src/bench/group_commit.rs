//! `basalt bench group-commit`: every selected (store, mode, producers)
//! run of the group-commit workload, one after the other, then a table of
//! the runs and the speed-ups of group commit over both baselines.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use basalt_benches::group_commit::{self, Config, Mode, Outcome, Progress, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::GroupCommitArgs;

/// Runs the benchmark and prints its report on stdout.
pub async fn run(args: &GroupCommitArgs) -> anyhow::Result<()> {
    let plan = plan(args)?;
    let runs = execute(&plan).await?;
    let report = Report::new(args, runs);
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        println!("{json}");
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// The runs to make, in order.
fn plan(args: &GroupCommitArgs) -> anyhow::Result<Vec<Config>> {
    if args.producers.contains(&0) {
        bail!("--producers: every producer count must be at least 1");
    }
    let (stores, modes) = (args.stores(), args.modes());
    let mut plan = Vec::new();
    for &store in &stores {
        for &mode in &modes {
            for producers in args.producer_counts() {
                plan.push(Config {
                    record_bytes: args.record_bytes,
                    dir: args.dir.clone(),
                    ..Config::new(
                        mode,
                        store,
                        producers,
                        args.records_for(mode, store, producers),
                    )
                });
            }
        }
    }
    if plan.is_empty() {
        bail!("nothing to run: select at least one store, mode and producer count");
    }
    Ok(plan)
}

/// Runs the plan under a progress bar on stderr (hidden when stderr is not
/// a terminal).
async fn execute(plan: &[Config]) -> anyhow::Result<Vec<(Config, Outcome)>> {
    let total: u64 = plan.iter().map(|cfg| cfg.records).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {human_pos}/{human_len} records  {wide_msg}",
        )
        .context("progress bar template")?,
    );
    let progress = Progress::new();
    let ticker = tokio::spawn({
        let (bar, progress) = (bar.clone(), progress.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                bar.set_position(progress.records_done());
            }
        }
    });
    let mut runs = Vec::with_capacity(plan.len());
    let outcome = measure(plan, &bar, &progress, &mut runs).await;
    ticker.abort();
    bar.finish_and_clear();
    outcome.map(|()| runs)
}

/// The warm-up, then every run of the plan, collected into `runs`.
async fn measure(
    plan: &[Config],
    bar: &ProgressBar,
    progress: &Progress,
    runs: &mut Vec<(Config, Outcome)>,
) -> anyhow::Result<()> {
    warm_up(plan, bar).await?;
    for cfg in plan {
        bar.set_message(label(cfg));
        let outcome = group_commit::run_with_progress(cfg, progress)
            .await
            .with_context(|| format!("{}, {} records", label(cfg), cfg.records))?;
        runs.push((cfg.clone(), outcome));
    }
    Ok(())
}

/// "store, mode, N producers" of one run.
fn label(cfg: &Config) -> String {
    let plural = if cfg.producers == 1 { "" } else { "s" };
    format!(
        "{}, {}, {} producer{plural}",
        cfg.store, cfg.mode, cfg.producers
    )
}

/// Records of the untimed warm-up run of each store.
const WARM_UP_RECORDS: u64 = 100;

/// One short untimed group-commit run per store in the plan, so the first
/// measured run does not pay for cold caches, lazily started threads and
/// the first files of the directory.
async fn warm_up(plan: &[Config], bar: &ProgressBar) -> anyhow::Result<()> {
    let mut warmed: Vec<Store> = Vec::new();
    for cfg in plan {
        if warmed.contains(&cfg.store) {
            continue;
        }
        warmed.push(cfg.store);
        bar.set_message(format!("{}, warming up", cfg.store));
        let warm = Config {
            mode: Mode::GroupCommit,
            producers: 1,
            records: WARM_UP_RECORDS.min(cfg.records),
            ..cfg.clone()
        };
        group_commit::run(&warm)
            .await
            .with_context(|| format!("{}, warm-up run", cfg.store))?;
    }
    Ok(())
}

/// Everything the command reports; also its `--json` document.
#[derive(Debug, Serialize)]
struct Report {
    /// Always `"group-commit"`.
    benchmark: &'static str,
    /// Payload bytes of every record.
    record_bytes: usize,
    /// Where local runs put their temporary task hubs.
    dir: String,
    /// One entry per run, in the order they ran.
    runs: Vec<Run>,
    /// Group commit's speed-up per store and producer count.
    ratios: Vec<Ratio>,
}

/// One run in the report.
#[derive(Debug, Serialize)]
struct Run {
    /// Store slug (`local-file`, `local-object`, `memory`).
    store: &'static str,
    /// Mode slug (`group-commit`, `serial-per-record`, `concurrent-per-record`).
    mode: &'static str,
    /// Concurrent producers.
    producers: usize,
    /// Records made durable.
    records: u64,
    /// Seconds of the producing phase.
    elapsed_secs: f64,
    /// Durable records per second.
    records_per_sec: f64,
    /// Durable storage writes (group commits or object puts).
    storage_writes: u64,
    /// Average records per storage write.
    records_per_write: f64,
    #[serde(skip)]
    store_name: String,
    #[serde(skip)]
    mode_name: String,
}

/// Group commit's throughput divided by each baseline's, for one store and
/// producer count; absent when a side was not run.
#[derive(Debug, Serialize)]
struct Ratio {
    /// Store slug.
    store: &'static str,
    /// Concurrent producers.
    producers: usize,
    /// Group commit records/s ÷ serial per-record records/s.
    over_serial_per_record: Option<f64>,
    /// Group commit records/s ÷ concurrent per-record records/s.
    over_concurrent_per_record: Option<f64>,
    #[serde(skip)]
    store_name: String,
}

impl Report {
    fn new(args: &GroupCommitArgs, runs: Vec<(Config, Outcome)>) -> Report {
        let rate = |store: Store, mode: Mode, producers: usize| {
            runs.iter()
                .find(|(c, _)| c.store == store && c.mode == mode && c.producers == producers)
                .map(|(_, o)| o.records_per_sec)
        };
        let mut ratios = Vec::new();
        for store in Store::ALL {
            for producers in args.producer_counts() {
                let Some(group) = rate(store, Mode::GroupCommit, producers) else {
                    continue;
                };
                let over = |mode| rate(store, mode, producers).map(|r| group / r);
                let ratio = Ratio {
                    store: store.slug(),
                    producers,
                    over_serial_per_record: over(Mode::SerialPerRecord),
                    over_concurrent_per_record: over(Mode::ConcurrentPerRecord),
                    store_name: store.to_string(),
                };
                if ratio.over_serial_per_record.is_some()
                    || ratio.over_concurrent_per_record.is_some()
                {
                    ratios.push(ratio);
                }
            }
        }
        let runs = runs
            .into_iter()
            .map(|(cfg, o)| Run {
                store: cfg.store.slug(),
                mode: cfg.mode.slug(),
                producers: cfg.producers,
                records: o.records,
                elapsed_secs: o.elapsed.as_secs_f64(),
                records_per_sec: o.records_per_sec,
                storage_writes: o.storage_writes,
                records_per_write: o.records_per_write(),
                store_name: cfg.store.to_string(),
                mode_name: cfg.mode.to_string(),
            })
            .collect();
        Report {
            benchmark: "group-commit",
            record_bytes: args.record_bytes,
            dir: args
                .dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .display()
                .to_string(),
            runs,
            ratios,
        }
    }

    /// The human-readable report: a table of runs, then the ratios.
    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "group commit benchmark: {}-byte records, each producer waits for durability; \
             local hubs in {}; one untimed warm-up run per store\n",
            self.record_bytes, self.dir
        );
        let header = [
            "store",
            "mode",
            "producers",
            "records",
            "time",
            "records/s",
            "storage writes",
            "records/write",
        ];
        let rows: Vec<[String; 8]> = self
            .runs
            .iter()
            .map(|r| {
                [
                    r.store_name.clone(),
                    r.mode_name.clone(),
                    r.producers.to_string(),
                    digits(r.records),
                    seconds(r.elapsed_secs),
                    digits(r.records_per_sec.round() as u64),
                    digits(r.storage_writes),
                    format!("{:.1}", r.records_per_write),
                ]
            })
            .collect();
        out.push_str(&table(&header, &rows, 2));
        if !self.ratios.is_empty() {
            out.push_str("\ngroup commit speed-up (records/s of group commit ÷ records/s of the baseline)\n\n");
            let header = [
                "store",
                "producers",
                "÷ serial per-record",
                "÷ concurrent per-record",
            ];
            let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}×"));
            let rows: Vec<[String; 4]> = self
                .ratios
                .iter()
                .map(|r| {
                    [
                        r.store_name.clone(),
                        r.producers.to_string(),
                        ratio(r.over_serial_per_record),
                        ratio(r.over_concurrent_per_record),
                    ]
                })
                .collect();
            out.push_str(&table(&header, &rows, 2));
        }
        out
    }
}

/// Formats a table: the first `left` columns left-aligned, the rest right-
/// aligned, a rule under the header.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]], left: usize) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|row| row[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..N).map(width).collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i < left {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        line.truncate(line.trim_end().len());
        line.push('\n');
        line
    };
    let mut out = line(&mut header.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// A duration for people: milliseconds below a second, seconds above.
fn seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

/// `1234567` as `1,234,567`.
fn digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(digits(0), "0");
        assert_eq!(digits(999), "999");
        assert_eq!(digits(1000), "1,000");
        assert_eq!(digits(1_234_567), "1,234,567");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [
            ["a".to_owned(), "1".to_owned()],
            ["bbb".to_owned(), "22".to_owned()],
        ];
        let text = table(&["name", "n"], &rows, 1);
        assert_eq!(text, "name   n\n----  --\na      1\nbbb   22\n");
    }
}
