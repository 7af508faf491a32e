//! The stages and their handlers. Lead-list items are batches of leads (seed 004's batches of
//! 10); every good lead then flows on its own: its lead-list batch completes with one
//! company-research follow-up per good lead, and a company-research item completes with its
//! contact-research follow-up, each in the completion's own commit (`JobContext::follow_up`).
//! Contact research parks a lead whose contacts were not found until a person decides.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use leasehold::durable::{
    evidence, retry_with, DurableError, RetryPolicies, RetryPolicy, Task, TaskRunner, ToolOutput,
};
use leasehold::runtime::{JobContext, JobError};
use leasehold::{DecisionRequest, NewItem, Store};

use super::report;
use super::sim::Sim;

/// The three stages, in order.
pub(crate) const STAGES: [Stage; 3] = [Stage::LeadList, Stage::Company, Stage::Contact];

/// The kind of the run's final summary item.
pub(crate) const SUMMARY_KIND: &str = "pipeline_summary";

/// The group every item of the run is in.
pub(crate) const GROUP: &str = "pipeline";

/// The answers a lead without contacts can be given: keep it without a contact, or skip it.
pub(crate) const DECISION_ANSWERS: [&str; 2] = ["keep", "skip"];

/// One of the three stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    LeadList,
    Company,
    Contact,
}

impl Stage {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Stage::LeadList => "lead_list",
            Stage::Company => "company_research",
            Stage::Contact => "contact_research",
        }
    }
    pub(crate) fn title(self) -> &'static str {
        match self {
            Stage::LeadList => "lead list",
            Stage::Company => "company research",
            Stage::Contact => "contact research",
        }
    }
    fn tool(self) -> &'static str {
        match self {
            Stage::LeadList => "directory_search",
            Stage::Company => "web_fetch",
            Stage::Contact => "email_verify",
        }
    }
    pub(crate) fn index(self) -> u64 {
        match self {
            Stage::LeadList => 1,
            Stage::Company => 2,
            Stage::Contact => 3,
        }
    }
    fn next(self) -> Option<Stage> {
        match self {
            Stage::LeadList => Some(Stage::Company),
            Stage::Company => Some(Stage::Contact),
            Stage::Contact => None,
        }
    }
}

/// One lead as it moves through the stages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Lead {
    pub(crate) id: u32,
    #[serde(default)]
    pub(crate) company: Option<String>,
    #[serde(default)]
    pub(crate) domain: Option<String>,
}

/// A stage item's input: a batch of leads in the lead list, one lead in the later stages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StageInput {
    pub(crate) stage: Stage,
    pub(crate) batch: u32,
    pub(crate) seed: u64,
    pub(crate) total_leads: u32,
    /// `--criteria`: what stage 1 searches the directory for.
    #[serde(default)]
    pub(crate) criteria: Value,
    pub(crate) leads: Vec<Lead>,
}

impl StageInput {
    /// The item that carries this input.
    pub(crate) fn into_item(self) -> NewItem {
        let kind = self.stage.kind();
        NewItem::new(kind, serde_json::to_value(self).unwrap_or_default())
            .max_attempts(5)
            .group(GROUP)
    }
}

/// One lead's result in a stage item's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LeadResult {
    pub(crate) lead: Lead,
    pub(crate) ok: bool,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) data: Value,
}

/// This run's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) retries: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) tool_executions: AtomicU64,
}

/// What each handler needs.
pub(crate) struct Ctx {
    pub(crate) runner: TaskRunner,
    pub(crate) sim: Sim,
    /// Retry policies: the default, and contact research's own (one more attempt); an item may
    /// override its kind's with `input.retry`.
    pub(crate) retry: RetryPolicies,
    pub(crate) counters: Counters,
    pub(crate) crash_after: Option<u64>,
}

/// The handlers' shared state.
pub(crate) type Shared = Arc<Ctx>;

/// A stage item: every lead is one step of `run_job`; then the good leads' follow-ups, and in
/// contact research the decision on a lead without contacts.
pub(crate) async fn handle_stage(ctx: JobContext, shared: Shared) -> Result<Value, JobError> {
    let input: StageInput = ctx.input_as()?;
    let policy = shared
        .retry
        .for_item(ctx.item())
        .map_err(DurableError::into_job_error)?;
    let job = ctx.clone();
    let leads = input.leads.clone();
    let (stage, batch, criteria) = (input.stage, input.batch, input.criteria.clone());
    let steps = shared.clone();
    let done = shared
        .runner
        .clone()
        .run_job(&ctx, |task| async move {
            // A resume after a decision is the plan, not a recovery: not counted.
            if task.resumed_from().is_some() && job.decision().is_none() {
                steps.counters.resumed.fetch_add(1, Ordering::Relaxed);
            }
            if stage == Stage::LeadList {
                // The batch's first checkpoint, committed before any lead's tool runs (seed
                // 004's checkpoint between batches): a crash after any tool execution leaves
                // the batch at least this checkpoint to resume from.
                let count = leads.len();
                task.step("batch-start", move |_| async move {
                    Ok::<_, DurableError>(json!({ "stage": stage, "batch": batch, "leads": count }))
                })
                .await?;
            }
            let mut results = Vec::with_capacity(leads.len());
            for (n, lead) in leads.iter().enumerate() {
                let (s, l, p, c) = (
                    steps.clone(),
                    lead.clone(),
                    policy.clone(),
                    criteria.clone(),
                );
                if let Some(domain) = &lead.domain {
                    job.set_task(format!("{} for {domain}", stage.title()));
                }
                let out = task
                    .step(&format!("lead-{}", lead.id), move |t| {
                        process_lead(t, s, p, stage, l, c)
                    })
                    .await?;
                results.push(out);
                if leads.len() > 1 {
                    // Progress is informational: a lost lease shows up on the next fenced write.
                    let _ = job
                        .progress(json!({ "done": n + 1, "of": leads.len() }))
                        .await;
                }
            }
            Ok(results)
        })
        .await?;

    let mut results = Vec::with_capacity(done.output.len());
    for value in done.output {
        let mut result: LeadResult = serde_json::from_value(value).map_err(JobError::permanent)?;
        if stage == Stage::Contact && result.ok && result.data["tool"]["contact"].is_null() {
            decide_gap(&ctx, &mut result)?;
        }
        if let (true, Some(next)) = (result.ok, stage.next()) {
            let item = StageInput {
                stage: next,
                batch: result.lead.id,
                seed: input.seed,
                total_leads: input.total_leads,
                criteria: input.criteria.clone(),
                leads: vec![result.lead.clone()],
            }
            .into_item();
            ctx.follow_up(item).map_err(JobError::permanent)?;
        }
        results.push(result);
    }
    Ok(json!({ "stage": stage, "batch": batch, "results": results }))
}

/// A lead whose contacts were not found: parked until someone decides (seed 004's contact
/// gap), then kept without a contact or skipped, as decided.
fn decide_gap(ctx: &JobContext, result: &mut LeadResult) -> Result<(), JobError> {
    let subject = result.lead.domain.clone().unwrap_or_default();
    match ctx.decision() {
        None => Err(JobError::awaiting_decision(DecisionRequest::new(
            format!("no contact found for {subject}: keep the lead without a contact, or skip it?"),
            DECISION_ANSWERS,
        ))),
        Some("keep") => {
            result.data["decision"] = json!("keep");
            Ok(())
        }
        Some(other) => {
            result.ok = false;
            result.error = Some(format!("no contact found for {subject}; decided: {other}"));
            result.data["decision"] = json!(other);
            Ok(())
        }
    }
}

/// One lead through one stage: a model call (cached) and a tool call (ledger), each retried
/// on transient errors. A permanent error, or retries spent, marks the lead failed.
async fn process_lead(
    task: Task,
    shared: Shared,
    policy: RetryPolicy,
    stage: Stage,
    lead: Lead,
    criteria: Value,
) -> Result<Value, DurableError> {
    let sim = shared.sim.clone();
    let subject = lead
        .domain
        .clone()
        .unwrap_or_else(|| format!("lead #{}", lead.id));
    let prompt = format!("{} for {subject}", stage.title());

    let attempts = AtomicU32::new(0);
    // Counts retries: failed attempts followed by another one (not permanent or final failures).
    let observe = |f: &leasehold::durable::FailedAttempt<'_, DurableError>| {
        if f.next_delay.is_some() {
            shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
    };
    let llm = retry_with(&policy, DurableError::is_transient, observe, || {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let (task, sim, prompt) = (task.clone(), sim.clone(), prompt.clone());
        let id = lead.id;
        async move {
            let summary = format!("notes on {prompt}");
            task.llm(stage.kind(), &prompt, "sim-model-1", || async move {
                sim.call(stage, id, 1, attempt).await?;
                Ok(json!({ "summary": summary }))
            })
            .await
        }
    })
    .await;
    let llm = match llm {
        Ok(v) => v,
        Err(e) if e.is_lease_lost() || matches!(e, DurableError::Store(_)) => return Err(e),
        Err(e) => return Ok(failed(&lead, &e)),
    };

    let command = match (stage, criteria.as_object()) {
        (Stage::LeadList, Some(c)) if !c.is_empty() => {
            format!("{} {criteria} {subject}", stage.tool())
        }
        _ => format!("{} {subject}", stage.tool()),
    };
    let attempts = AtomicU32::new(0);
    let tool = retry_with(&policy, DurableError::is_transient, observe, || {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let (task, sim, command) = (task.clone(), sim.clone(), command.clone());
        let (lead, criteria) = (lead.clone(), criteria.clone());
        let ran = command.clone();
        async move {
            task.tool(stage.tool(), &command, || async move {
                sim.call(stage, lead.id, 2, attempt).await?;
                if stage == Stage::Company && sim.bad_domain(lead.id) {
                    return Err(DurableError::permanent(format!(
                        "{} does not resolve",
                        lead.domain.clone().unwrap_or_default()
                    )));
                }
                let domain = lead.domain.clone().unwrap_or_default();
                let result = match stage {
                    Stage::LeadList => {
                        let (company, domain) = sim.company(lead.id);
                        json!({ "company": company, "domain": domain, "criteria": criteria })
                    }
                    Stage::Company => {
                        let pms = criteria["pms"].as_str().unwrap_or("Buildium");
                        json!({ "units": 50 + lead.id * 7 % 400, "pms": pms })
                    }
                    Stage::Contact if sim.no_contact(lead.id) => {
                        json!({ "contact": null, "verified": false })
                    }
                    Stage::Contact => {
                        json!({ "contact": format!("owner@{domain}"), "verified": true })
                    }
                };
                // The simulated command "exited 0": evidence on its tool_executed checkpoint.
                Ok::<_, DurableError>(ToolOutput {
                    result,
                    evidence: vec![evidence::command_exit(ran, 0, 0)],
                })
            })
            .await
        }
    })
    .await;
    let tool = match tool {
        Ok(t) => t,
        Err(e) if e.is_lease_lost() || matches!(e, DurableError::Store(_)) => return Err(e),
        Err(e) => return Ok(failed(&lead, &e)),
    };
    if !tool.replayed {
        let n = shared
            .counters
            .tool_executions
            .fetch_add(1, Ordering::SeqCst)
            + 1;
        if shared.crash_after == Some(n) {
            // The tool's result is committed; the lead's step and the item are not.
            eprintln!("pipeline: --crash-after {n}: aborting after tool execution {n}");
            std::process::abort();
        }
    }
    let mut next = lead.clone();
    if stage == Stage::LeadList {
        next.company = tool.result["company"].as_str().map(str::to_owned);
        next.domain = tool.result["domain"].as_str().map(str::to_owned);
    }
    let result = LeadResult {
        lead: next,
        ok: true,
        error: None,
        data: json!({ "llm": llm, "tool": tool.result }),
    };
    Ok(serde_json::to_value(result).unwrap_or(Value::Null))
}

fn failed(lead: &Lead, e: &DurableError) -> Value {
    serde_json::to_value(LeadResult {
        lead: lead.clone(),
        ok: false,
        error: Some(e.to_string()),
        data: Value::Null,
    })
    .unwrap_or(Value::Null)
}

/// The final summary: every stage's counts and every lead's row, from the stage items in the
/// store (with dependencies, from the outputs of the items it depends on).
pub(crate) async fn handle_summary(store: Arc<dyn Store>) -> Result<Value, JobError> {
    let views = report::stage_views(&*store)
        .await
        .map_err(|e| JobError::retryable(e.to_string()))?;
    Ok(report::summary_output(&views))
}
