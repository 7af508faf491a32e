//! What the run shows and writes: the stages' state read from the store, the progress display
//! (indicatif bars on a terminal, plain lines otherwise), the final table and JSON line, and
//! `--output-dir`'s files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use leasehold::{Item, ItemFilter, ItemStatus, Store};

use super::stages::{Lead, LeadResult, Stage, GROUP, STAGES};

/// Every item of one kind in the run's group, by id.
pub(crate) async fn items_of(
    store: &dyn Store,
    kind: &str,
) -> Result<Vec<Item>, Box<dyn std::error::Error>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .items_list(&ItemFilter {
                kind: Some(kind.into()),
                group_id: Some(GROUP.into()),
                after,
                limit: 1000,
                ..ItemFilter::default()
            })
            .await?;
        let full = page.len() == 1000;
        after = page.last().map(|i| i.id);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// One stage's state in the database.
#[derive(Debug, Default, Clone)]
pub(crate) struct StageView {
    /// Its items.
    pub(crate) items: usize,
    /// Those finished (completed, failed or cancelled).
    pub(crate) terminal: usize,
    /// Those parked, awaiting a decision, by id.
    pub(crate) awaiting: Vec<Item>,
    /// The leads its items carry.
    pub(crate) leads: usize,
    /// The leads done (finished items' and in-progress batches' reported progress).
    pub(crate) done: usize,
    /// Every finished lead's result, by lead id.
    pub(crate) results: Vec<LeadResult>,
}

impl StageView {
    /// The leads that passed this stage.
    pub(crate) fn ok(&self) -> usize {
        self.results.iter().filter(|r| r.ok).count()
    }
    /// The leads that failed here.
    pub(crate) fn failed(&self) -> usize {
        self.results.len() - self.ok()
    }
    /// Whether every item of the stage has finished.
    pub(crate) fn finished(&self) -> bool {
        self.terminal == self.items
    }
}

fn view(items: Vec<Item>) -> StageView {
    let mut v = StageView {
        items: items.len(),
        ..StageView::default()
    };
    for it in items {
        let leads: Vec<Lead> =
            serde_json::from_value(it.input["leads"].clone()).unwrap_or_default();
        v.leads += leads.len();
        match it.status {
            ItemStatus::Completed => {
                v.terminal += 1;
                v.done += leads.len();
                let results = it
                    .output
                    .as_ref()
                    .and_then(|o| o["results"].as_array().cloned());
                for r in results.unwrap_or_default() {
                    if let Ok(r) = serde_json::from_value::<LeadResult>(r) {
                        v.results.push(r);
                    }
                }
            }
            ItemStatus::Failed | ItemStatus::Cancelled => {
                v.terminal += 1;
                v.done += leads.len();
                let error = it
                    .error
                    .clone()
                    .unwrap_or_else(|| it.status.as_str().to_string());
                v.results.extend(leads.into_iter().map(|lead| LeadResult {
                    lead,
                    ok: false,
                    error: Some(error.clone()),
                    data: Value::Null,
                }));
            }
            ItemStatus::InProgress => {
                v.done += it
                    .progress
                    .as_ref()
                    .and_then(|p| p["done"].as_u64())
                    .unwrap_or(0) as usize;
            }
            ItemStatus::Awaiting => v.awaiting.push(it),
            _ => {}
        }
    }
    v.results.sort_by_key(|r| r.lead.id);
    v
}

/// The three stages' state.
pub(crate) async fn stage_views(
    store: &dyn Store,
) -> Result<[StageView; 3], Box<dyn std::error::Error>> {
    let mut views: [StageView; 3] = Default::default();
    for (i, stage) in STAGES.iter().enumerate() {
        views[i] = view(items_of(store, stage.kind()).await?);
    }
    Ok(views)
}

/// Whether every lead's chain has finished: lead lists exist and no stage item is open. A
/// follow-up commits with the completion that asked for it, so no open item means no stage
/// left to come.
pub(crate) fn chains_finished(views: &[StageView; 3]) -> bool {
    views[0].items > 0 && views.iter().all(StageView::finished)
}

/// The summary item's output: each stage's counts, the run's totals and every lead's row.
pub(crate) fn summary_output(views: &[StageView; 3]) -> Value {
    let stages: Vec<Value> = STAGES
        .iter()
        .zip(views)
        .map(|(s, v)| json!({ "stage": s.kind(), "items": v.items, "ok": v.ok(), "failed": v.failed() }))
        .collect();
    // Each lead's row: its furthest stage's result.
    let mut rows: BTreeMap<u32, Value> = BTreeMap::new();
    for (stage, v) in STAGES.iter().zip(views) {
        for r in &v.results {
            let contact = r.data["tool"]["contact"].as_str().map(str::to_owned);
            let status = match (r.ok, stage) {
                (true, Stage::Contact) => "completed",
                (true, _) => "in_progress",
                (false, _) => "failed",
            };
            rows.insert(
                r.lead.id,
                json!({
                    "id": r.lead.id,
                    "company": r.lead.company,
                    "domain": r.lead.domain,
                    "contact": contact,
                    "status": status,
                    "stage": stage.kind(),
                    "decision": r.data.get("decision"),
                    "error": r.error,
                }),
            );
        }
    }
    json!({
        "stages": stages,
        "completed": views[2].ok(),
        "failed": views.iter().map(StageView::failed).sum::<usize>(),
        "leads": rows.into_values().collect::<Vec<_>>(),
    })
}

/// Progress display: a bar per stage on a terminal, plain lines otherwise.
pub(crate) enum Progress {
    Bars {
        multi: MultiProgress,
        bars: Vec<ProgressBar>,
    },
    Lines {
        last: String,
    },
}

impl Progress {
    /// Bars when `tty`, else plain lines.
    pub(crate) fn new(tty: bool) -> Self {
        if !tty {
            return Progress::Lines {
                last: String::new(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template(
            "{prefix:<17} [{bar:30.cyan/blue}] {pos:>5}/{len:<5} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>-");
        let bars = STAGES
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(s.title());
                bar
            })
            .collect();
        Progress::Bars { multi, bars }
    }

    /// Shows the stages' state. A stage's total is what it holds plus what the stage before
    /// can still send it.
    pub(crate) fn show(&mut self, total_leads: u32, views: &[StageView; 3]) {
        let mut totals = [0usize; 3];
        for (i, v) in views.iter().enumerate() {
            totals[i] = if i == 0 {
                v.leads.max(total_leads as usize)
            } else {
                let prev = &views[i - 1];
                v.leads + totals[i - 1].saturating_sub(prev.done)
            };
        }
        match self {
            Progress::Bars { bars, .. } => {
                for ((bar, v), total) in bars.iter().zip(views).zip(totals) {
                    bar.set_length(total as u64);
                    bar.set_position(v.done as u64);
                    let awaiting = if v.awaiting.is_empty() {
                        String::new()
                    } else {
                        format!(", awaiting {}", v.awaiting.len())
                    };
                    bar.set_message(format!("failed {}{awaiting}", v.failed()));
                }
            }
            Progress::Lines { last } => {
                let line = STAGES
                    .iter()
                    .zip(views)
                    .zip(totals)
                    .map(|((s, v), t)| format!("{} {}/{}", s.kind(), v.done, t))
                    .collect::<Vec<_>>()
                    .join("  ");
                if line != *last {
                    println!("progress: {line}");
                    *last = line;
                }
            }
        }
    }

    /// Prints a line above the bars (or plainly).
    pub(crate) fn note(&self, line: &str) {
        match self {
            Progress::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Progress::Lines { .. } => println!("{line}"),
        }
    }

    /// Leaves the bars drawn as they are.
    pub(crate) fn finish(&self) {
        if let Progress::Bars { bars, .. } = self {
            for bar in bars {
                bar.abandon();
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// The final table of stages and totals.
pub(crate) fn print_table(summary: &Value, totals: &BTreeMap<&str, u64>) {
    println!();
    println!("{:<17} {:>8} {:>8} {:>8}", "stage", "items", "ok", "failed");
    for (stage, s) in STAGES
        .iter()
        .zip(summary["stages"].as_array().into_iter().flatten())
    {
        println!(
            "{:<17} {:>8} {:>8} {:>8}",
            stage.title(),
            s["items"].as_u64().unwrap_or(0),
            s["ok"].as_u64().unwrap_or(0),
            s["failed"].as_u64().unwrap_or(0)
        );
    }
    for (k, v) in totals {
        println!("{k:<24} {v:>8}");
    }
}

/// `--output-dir`: one JSON file per stage (every lead's result there) and `leads.csv`.
pub(crate) fn write_output_dir(
    dir: &Path,
    views: &[StageView; 3],
    summary: &Value,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (stage, v) in STAGES.iter().zip(views) {
        let path = dir.join(format!("{}.json", stage.kind()));
        let body = json!({ "stage": stage.kind(), "items": v.items, "results": v.results });
        std::fs::write(&path, serde_json::to_string_pretty(&body)?)?;
        written.push(path.display().to_string());
    }
    let path = dir.join("leads.csv");
    let mut csv = String::from("id,company,domain,contact,status,stage,decision,error\n");
    for row in summary["leads"].as_array().into_iter().flatten() {
        let cells: Vec<String> = [
            "id", "company", "domain", "contact", "status", "stage", "decision", "error",
        ]
        .iter()
        .map(|k| csv_cell(&row[*k]))
        .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    std::fs::write(&path, csv)?;
    written.push(path.display().to_string());
    Ok(written)
}

/// One CSV cell: quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
