//! What every `basalt bench` workload shares once its runs are made: the
//! report (one JSON schema, `basalt_benches::report`), the tables people
//! read, the progress bar, and the exit status — a failed check fails the
//! command.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use basalt_benches::environment::Environment;
use basalt_benches::report::{self, Check, Report, Run, Spread};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::bench_cli::CommonArgs;

/// A progress bar on stderr for `len` units (hidden when stderr is not a
/// terminal).
pub fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:28} [{bar:30}] {human_pos}/{human_len} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

/// One finished run and its check.
pub struct Finished {
    /// The figures.
    pub run: Run,
    /// Its check.
    pub check: Check,
}

/// Everything needed to report a workload.
pub struct Outcome<'a, S: Serialize> {
    /// The workload's name.
    pub workload: &'static str,
    /// What it did, for the table's title.
    pub title: String,
    /// Every option (serialized into `settings`).
    pub settings: &'a S,
    /// Common options (for the report file).
    pub common: &'a CommonArgs,
    /// Where it ran.
    pub environment: Environment,
    /// The runs in order, with their checks.
    pub finished: Vec<Finished>,
    /// Notes printed under the table (e.g. a baseline at a smaller N).
    pub notes: Vec<String>,
}

impl<S: Serialize> Outcome<'_, S> {
    /// Builds the report, writes it where `--json` says, prints the
    /// tables, and fails if any run's check failed.
    pub fn report(self) -> anyhow::Result<()> {
        let check = combine(&self.finished);
        let runs: Vec<Run> = self.finished.into_iter().map(|f| f.run).collect();
        let report = Report {
            workload: self.workload.to_owned(),
            settings: serde_json::to_value(self.settings).context("encoding the settings")?,
            environment: self.environment,
            check,
            summary: report::summarize(&runs),
            runs,
        };
        let to_stdout = self.common.json.as_deref() == Some(Path::new("-"));
        if let Some(path) = &self.common.json {
            let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
            if to_stdout {
                println!("{json}");
            } else {
                std::fs::write(path, json + "\n")
                    .with_context(|| format!("writing the report to {}", path.display()))?;
            }
        }
        if !to_stdout {
            let mut text = render(&self.title, &report);
            if report.runs.len() > 1 {
                let _ = writeln!(
                    text,
                    "memory: peak and kept MiB are close to exact for the first run (only a 200-instance warm-up precedes it); later runs reuse pages an earlier run freed (the allocator keeps them), so theirs are lower bounds: run a configuration alone for its own"
                );
            }
            for note in &self.notes {
                let _ = writeln!(text, "{note}");
            }
            if let Some(path) = &self.common.json {
                let _ = writeln!(text, "report written to {}", path.display());
            }
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        if !report.check.passed {
            bail!(
                "the {} check FAILED: {}",
                report.workload,
                report.check.detail
            );
        }
        Ok(())
    }
}

/// One check over every run: passed only if each passed.
fn combine(finished: &[Finished]) -> Check {
    let failed: Vec<String> = finished
        .iter()
        .filter(|f| !f.check.passed)
        .map(|f| {
            format!(
                "{} (run {}): {}",
                f.run.config, f.run.repeat, f.check.detail
            )
        })
        .collect();
    match (failed.is_empty(), finished.first()) {
        (_, None) => Check {
            passed: false,
            detail: "nothing ran".into(),
        },
        (true, Some(first)) => Check {
            passed: true,
            detail: format!(
                "all {} run(s) passed; {}: {}",
                finished.len(),
                first.run.config,
                first.check.detail
            ),
        },
        (false, _) => Check {
            passed: false,
            detail: failed.join("; "),
        },
    }
}

/// The tables people read: the environment, one row per run, the durable
/// writes by kind, the spread over repeats, then the check.
pub fn render(title: &str, report: &Report) -> String {
    let env = &report.environment;
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "storage: {} ({}{}) · {} cores · {} · {}{}\n",
        env.bench_dir,
        env.bench_dir_fs,
        if env.durable { "" } else { ", NOT durable" },
        env.cores,
        env.rustc,
        env.git_rev
            .as_deref()
            .map_or("no git revision".to_owned(), |r| format!(
                "git {}",
                &r[..r.len().min(10)]
            )),
        if env.dirty == Some(true) {
            " (dirty)"
        } else {
            ""
        },
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let mib = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1}", v / (1 << 20) as f64));
    let header = [
        "config",
        "run",
        "done",
        "failed",
        "time",
        "per s",
        "mean ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "writes/i",
        "cpu ms/i",
        "user/sys",
        "peak MiB",
        "MiB/1k kept",
    ];
    let rows: Vec<[String; 16]> = report
        .runs
        .iter()
        .map(|r| {
            [
                r.config.clone(),
                r.repeat.to_string(),
                digits(r.completed),
                r.failed.to_string(),
                seconds(r.elapsed_s),
                digits(r.throughput_per_s.round() as u64),
                format!("{:.1}", r.latency_ms.mean),
                format!("{:.1}", r.latency_ms.p50),
                format!("{:.1}", r.latency_ms.p90),
                format!("{:.1}", r.latency_ms.p99),
                format!("{:.1}", r.latency_ms.max),
                opt(r.storage_writes_per_instance, 3),
                opt(r.cpu_ms_per_instance, 3),
                match (r.cpu_user_ms_per_instance, r.cpu_sys_ms_per_instance) {
                    (Some(u), Some(s)) if u + s > 0.0 => {
                        format!("{:.0}/{:.0}%", u / (u + s) * 100.0, s / (u + s) * 100.0)
                    }
                    _ => "-".into(),
                },
                mib(r.peak_rss_bytes.map(|b| b as f64)),
                mib(r.rss_bytes_per_1000_retained),
            ]
        })
        .collect();
    out.push_str(&table(&header, &rows, 1));

    let with_writes: Vec<&Run> = report
        .runs
        .iter()
        .filter(|r| r.storage_writes.is_some())
        .collect();
    if !with_writes.is_empty() {
        let _ = writeln!(
            out,
            "\ndurable writes (every one counted: group commits, checkpoints, new segment files)\n"
        );
        let header = [
            "config",
            "run",
            "group commits",
            "checkpoints",
            "new segments",
            "log MB",
            "checkpoint MB",
            "bytes/i",
        ];
        let rows: Vec<[String; 8]> = with_writes
            .iter()
            .filter_map(|r| {
                let w = r.storage_writes?;
                Some([
                    r.config.clone(),
                    r.repeat.to_string(),
                    digits(w.group_commits),
                    digits(w.checkpoints),
                    digits(w.segments_created),
                    format!("{:.2}", w.log_bytes as f64 / 1e6),
                    format!("{:.2}", w.checkpoint_bytes as f64 / 1e6),
                    opt(r.storage_bytes_per_instance, 0),
                ])
            })
            .collect();
        out.push_str(&table(&header, &rows, 1));
    }

    if report.summary.iter().any(|s| s.repeats > 1) {
        let _ = writeln!(out, "\nspread over repeats: median [min - max]\n");
        let spread = |s: Option<Spread>, digits: usize| {
            s.map_or("-".to_owned(), |s| {
                format!(
                    "{:.digits$} [{:.digits$} - {:.digits$}]",
                    s.median, s.min, s.max
                )
            })
        };
        let header = [
            "config",
            "producers",
            "runs",
            "per s",
            "p50 ms",
            "p99 ms",
            "cpu ms/i",
            "writes/i",
        ];
        let rows: Vec<[String; 8]> = report
            .summary
            .iter()
            .map(|s| {
                [
                    match &s.store {
                        Some(store) => format!("{} ({store})", s.config),
                        None => s.config.clone(),
                    },
                    s.producers.map_or("-".into(), |p| p.to_string()),
                    s.repeats.to_string(),
                    spread(s.throughput_per_s, 0),
                    spread(s.latency_p50_ms, 1),
                    spread(s.latency_p99_ms, 1),
                    spread(s.cpu_ms_per_instance, 3),
                    spread(s.storage_writes_per_instance, 3),
                ]
            })
            .collect();
        out.push_str(&table(&header, &rows, 1));
    }
    let _ = writeln!(
        out,
        "\ncheck: {} — {}",
        if report.check.passed {
            "passed"
        } else {
            "FAILED"
        },
        report.check.detail
    );
    out
}

/// Formats a table: the first `left` columns left-aligned, the rest right-
/// aligned, a rule under the header.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]], left: usize) -> String {
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
pub fn seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

/// `1234567` as `1,234,567`.
pub fn digits(n: u64) -> String {
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
    use std::time::Duration;

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

    fn finished(config: &str, passed: bool) -> Finished {
        Finished {
            run: Run::new(config, 1, 0, Duration::from_secs(1)),
            check: Check {
                passed,
                detail: format!("{config} detail"),
            },
        }
    }

    #[test]
    fn one_failed_run_fails_the_check() {
        let check = combine(&[finished("a", true), finished("b", false)]);
        assert!(!check.passed);
        assert!(check.detail.contains("b detail"), "{}", check.detail);
        assert!(combine(&[finished("a", true)]).passed);
        assert!(!combine(&[]).passed);
    }
}
