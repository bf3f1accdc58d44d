//! `evident-reporter`: builds, signs and anchors the daily compliance packs.
#![forbid(unsafe_code)]

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};

/// mimalloc instead of the system allocator: a build parses every leaf of
/// the day into many small allocations on the thread pool and frees them
/// on another thread, which glibc's allocator serves slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use evident_reporter::daemon::{self, DaemonEvent};
use evident_reporter::pack::{NoProgress, Progress, Stage};
use evident_reporter::run::chain;
use evident_reporter::{DayOutcome, Reporter, ReporterConfig, Status};
use evident_verify::ts::Timestamp;

const AFTER_HELP: &str = "\
Exit codes:
  0  success: the packs asked for are built and anchored (failed rules are
     evidence in each pack's report, not an error); `status`: up to date
  1  `status` only: some closed day is not built or not anchored
  2  usage, configuration, I/O, ledger or anchor failure (after the store's
     retries), or another reporter holds the build lock

Configuration: --config FILE (TOML, schemas/reporter.config.schema.json);
the environment overrides it: EVIDENT_REPORTER_LEDGER, EVIDENT_REPORTER_PACKS_DIR,
EVIDENT_S3_ENDPOINT, EVIDENT_S3_BUCKET, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.";

/// Builds each closed UTC day's signed compliance pack from an Evident
/// ledger, anchors it in WORM storage and records the receipts in the ledger.
#[derive(Debug, Parser)]
#[command(name = "evident-reporter", version, after_help = AFTER_HELP)]
struct Cli {
    /// Configuration file (TOML). Without it, the environment must name the
    /// ledger and the packs directory.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// One JSON object per line on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build and anchor packs: one day, or every missing closed day.
    Build(BuildArgs),
    /// Catch up now, then on every tick of the configured schedule, until
    /// SIGTERM or SIGINT (the day in progress is finished first).
    Daemon,
    /// Show which closed days are built and anchored.
    Status,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct BuildArgs {
    /// The UTC day to build (an existing pack is not rebuilt; missing
    /// anchors are completed).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_day)]
    day: Option<NaiveDate>,
    /// Every closed day from the ledger's first that has no pack, in order,
    /// and every pack that lacks anchors.
    #[arg(long)]
    missing: bool,
}

fn parse_day(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| d.to_string() == s)
        .ok_or_else(|| format!("{s:?} is not a YYYY-MM-DD date"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "evident-reporter: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cfg = ReporterConfig::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let reporter = Reporter::open(cfg)?;
    let json = cli.json;
    runtime.block_on(async move {
        match cli.command {
            Command::Build(args) => build(&reporter, args, json).await,
            Command::Daemon => run_daemon(&reporter, json).await,
            Command::Status => status(&reporter, json),
        }
    })
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

fn out(line: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")?;
    o.flush()?;
    Ok(())
}

/// A progress bar on stderr when it is a terminal and output is not JSON.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn begin(&self, day: NaiveDate, stage: Stage, total: u64) {
        let what = match stage {
            Stage::History => "reading history for",
            _ => "packing",
        };
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(format!("{what} {day}"));
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

fn progress(json: bool) -> (Arc<dyn Progress>, Option<indicatif::ProgressBar>) {
    if json || !std::io::stderr().is_terminal() {
        return (Arc::new(NoProgress), None);
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, eta {eta})") {
        bar.set_style(style);
    }
    (Arc::new(Bar(bar.clone())), Some(bar))
}

fn print_day(d: &DayOutcome, json: bool) -> Result<()> {
    if json {
        return out(&serde_json::to_string(d)?);
    }
    let what = if d.already_built { "already built" } else { "built" };
    out(&format!("{} {what}: {} entries, seq [{}, {}), {}", d.day, d.end - d.start, d.start, d.end, d.tar.display()))?;
    if d.rules_failed.is_empty() {
        out("  rules: all passed")?;
    } else {
        out(&format!("  rules failed (see report.html): {}", d.rules_failed.join(", ")))?;
    }
    for a in &d.anchors {
        let version = a.version_id.as_deref().map(|v| format!(" version {v}")).unwrap_or_default();
        let lock = match (&a.object_lock_mode, &a.retain_until) {
            (Some(m), Some(u)) => format!(", {m} until {u}"),
            _ => String::new(),
        };
        out(&format!(
            "  anchored {}: {}{version}{lock} (receipt seq {}, {})",
            a.artifact, a.location, a.seq, a.status
        ))?;
    }
    Ok(())
}

async fn build(reporter: &Reporter, args: BuildArgs, json: bool) -> Result<ExitCode> {
    let (progress, bar) = progress(json);
    let result = match args.day {
        Some(day) => reporter.build_day(day, now(), progress).await.map(|d| vec![d]),
        None => {
            let mut done = Vec::new();
            let stop = AtomicBool::new(false);
            let r = reporter
                .build_missing_with(now(), progress, &stop, &mut |d| {
                    if let Some(b) = &bar {
                        b.suspend(|| done.push(print_day(d, json)));
                    } else {
                        done.push(print_day(d, json));
                    }
                })
                .await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            done.into_iter().collect::<Result<()>>()?;
            let n = r?;
            if n == 0 && !json {
                let last = reporter.closed_range(now())?.map(|(_, l)| l.to_string());
                match last {
                    Some(l) => out(&format!("nothing to do: every closed day through {l} is packed and anchored"))?,
                    None => out("nothing to do: no closed day with ledger entries yet")?,
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    for d in result? {
        print_day(&d, json)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_daemon(reporter: &Reporter, json: bool) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before any work, so a signal during the first catch-up is
    // held until the day in progress is finished.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let mut failed_output = None;
    daemon::run(reporter, shutdown, Arc::new(NoProgress), &mut |ev| {
        let r = match ev {
            DaemonEvent::Started { schedule } => {
                let msg = format!("evident-reporter: daemon started, schedule {schedule:?} (UTC)");
                writeln!(std::io::stderr(), "{msg}").map_err(Into::into)
            }
            DaemonEvent::Day(d) => print_day(d, json),
            DaemonEvent::Failed(e) => {
                let msg = format!("evident-reporter: catch-up failed, retrying on the next tick: {}", chain(e));
                writeln!(std::io::stderr(), "{msg}").map_err(Into::into)
            }
            DaemonEvent::Stopping => writeln!(std::io::stderr(), "evident-reporter: stopping").map_err(Into::into),
            _ => Ok(()),
        };
        if let Err(e) = r
            && failed_output.is_none()
        {
            failed_output = Some(e);
        }
    })
    .await?;
    match failed_output {
        Some(e) if !is_broken_pipe(&e) => Err(e),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn status(reporter: &Reporter, json: bool) -> Result<ExitCode> {
    let st: Status = reporter.status(now())?;
    if json {
        out(&serde_json::to_string(&st)?)?;
    } else {
        out(&format!("packs     {}", st.packs_dir.display()))?;
        out(&format!("anchor    {}", st.anchor))?;
        match (&st.first_day, &st.last_closed_day) {
            (Some(f), Some(l)) if !st.days.is_empty() => {
                let built = st.days.iter().filter(|d| d.built).count();
                let anchored = st.days.iter().filter(|d| d.anchored).count();
                out(&format!("days      {f} .. {l}: {} closed, {built} built, {anchored} anchored", st.days.len()))?;
            }
            (Some(f), _) => out(&format!("days      none closed yet (first day {f})"))?,
            _ => out("days      the ledger has no entries yet")?,
        }
        if !st.missing.is_empty() {
            out(&format!("missing   {} (run `evident-reporter build --missing`)", day_ranges(&st.missing)))?;
        }
        if !st.unanchored.is_empty() {
            out(&format!("unanchored {} (run `evident-reporter build --missing`)", day_ranges(&st.unanchored)))?;
        }
        let failed: Vec<String> = st
            .days
            .iter()
            .filter(|d| !d.rules_failed.is_empty())
            .map(|d| format!("{} ({})", d.day, d.rules_failed.join(", ")))
            .collect();
        if !failed.is_empty() {
            out(&format!("rules failed on {}", failed.join("; ")))?;
        }
    }
    Ok(if st.up_to_date() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `2026-03-11 .. 2026-03-14, 2026-03-20`: consecutive days as ranges.
fn day_ranges(days: &[String]) -> String {
    let parsed: Vec<NaiveDate> = days.iter().filter_map(|d| parse_day(d).ok()).collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < parsed.len() {
        let mut j = i;
        while j + 1 < parsed.len() && parsed[j].succ_opt() == Some(parsed[j + 1]) {
            j += 1;
        }
        parts.push(if i == j {
            parsed[i].to_string()
        } else {
            format!("{} .. {} ({} days)", parsed[i], parsed[j], j - i + 1)
        });
        i = j + 1;
    }
    parts.join(", ")
}
