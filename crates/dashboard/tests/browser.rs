//! The page in a real browser: the dashboard serves a real SQLite file with work in flight (a
//! running tree whose workers hold items, plus a dead node, a stopped one, finished and
//! dead-lettered items), headless Chromium loads the page with the token in its fragment and
//! runs its script, and what the page shows must match the store: counts by status and by
//! kind, the chart's per-minute counts, every worker's state, current item and seconds since
//! its heartbeat, the recent failures with their errors, the recovery statistics; and it must
//! have refreshed itself. A screenshot (and the DOM) is kept in
//! `<target>/tmp/dashboard-test/dashboard.png`.
//!
//! Without Chromium the test is skipped with a `skipped …` line on the terminal saying how to
//! install it — unless `LEASEHOLD_REQUIRE_BROWSER=1` (which `.ci/run` sets, after installing
//! Debian's `chromium`): then it fails. `LEASEHOLD_CHROMIUM` names another binary.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, Notify};

use leasehold_core::{
    Clock, ItemFilter, ItemStatus, NewItem, SystemClock, WorkerCounts, WorkerState,
};
use leasehold_dashboard::{DashboardConfig, RECENT_FAILURES};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};

use common::{loopback, open, populate, serve};

const TOKEN: &str = "browser-test-token";

/// Chromium, or `None` after announcing that `test` skips (or failing, when a browser is
/// required).
fn chromium_for(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LEASEHOLD_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let why = "headless Chromium not found on PATH (looked for chromium, chromium-browser, \
               google-chrome, chrome): install Debian's package with `apt-get install -y chromium` \
               (.ci/run does this) or set LEASEHOLD_CHROMIUM to a Chromium binary";
    if std::env::var("LEASEHOLD_REQUIRE_BROWSER").is_ok_and(|v| matches!(v.trim(), "1" | "true")) {
        panic!("LEASEHOLD_REQUIRE_BROWSER is set but {why}");
    }
    // Straight to the terminal: the harness swallows `eprintln!` of a passing test.
    let _ = writeln!(std::io::stderr().lock(), "skipped {test}: {why}");
    None
}

fn chromium() -> Option<PathBuf> {
    chromium_for("page_in_headless_chromium_shows_what_the_store_holds")
}

/// Runs headless Chromium on `url` with `extra` flags and returns its stdout.
async fn run_chromium(profile: &Path, url: &str, extra: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(chromium().expect("found when the test started"));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium started");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// The text inside the element with `id` (its first text node).
fn text_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let end = rest[start..].find('<').expect("text end");
    rest[start..start + end].trim().to_string()
}

fn number(dom: &str, id: &str) -> u64 {
    let t = text_of(dom, id);
    t.parse()
        .unwrap_or_else(|_| panic!("#{id} shows {t:?}, not a number (did the script run?)"))
}

/// The sum of every `attr="N"` in the DOM.
fn sum_attr(dom: &str, attr: &str) -> u64 {
    dom.match_indices(&format!("{attr}=\""))
        .map(|(i, m)| {
            let v = &dom[i + m.len()..];
            v[..v.find('"').unwrap()].parse::<u64>().unwrap()
        })
        .sum()
}

/// The texts of the cells of the first table row whose tag carries `attr="value"`, with
/// the HTML entities the DOM dump uses turned back into characters.
fn cells(dom: &str, attr: &str, value: &str) -> Vec<String> {
    let at = dom
        .find(&format!("<tr {attr}=\"{value}\""))
        .unwrap_or_else(|| panic!("no table row with {attr}={value:?}"));
    let row = &dom[at..at + dom[at..].find("</tr>").expect("row end")];
    row.split("<td")
        .skip(1)
        .map(|td| {
            let start = td.find('>').expect("cell tag end") + 1;
            let end = td.find("</td>").expect("cell end");
            unescape(&td[start..end])
        })
        .collect()
}

/// The few entities a DOM dump writes in text.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The seconds a "since heartbeat" cell shows (`"2.4 s"`).
fn seconds(cell: &str) -> f64 {
    cell.strip_suffix(" s")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{cell:?} is not a number of seconds"))
}

/// The `data-state` of the worker row of `node`.
fn row_state(dom: &str, node: &str) -> String {
    let at = dom
        .find(&format!("data-node=\"{node}\""))
        .unwrap_or_else(|| panic!("no worker row for {node}"));
    let tag_end = at + dom[at..].find('>').unwrap();
    let tag_start = dom[..at].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_end];
    let s = tag.find("data-state=\"").expect("data-state") + "data-state=\"".len();
    tag[s..s + tag[s..].find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_in_headless_chromium_shows_what_the_store_holds() {
    let Some(chromium_bin) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let expected = populate(store.as_ref(), SystemClock.now()).await;

    // Work in flight: a real tree whose two workers hold an item each until released.
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    // Its monitor and reaper are off: the page must show the dead ghost still holding its
    // expired item, which a monitor would take back at its first check and a reaper at the
    // sweep it runs as the node starts.
    let builder = Leasehold::builder(store.clone())
        .node_id("live")
        .monitor(false)
        .reaper(false)
        .workers(2)
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(500))
        .handler("video", move |_ctx: JobContext| {
            let g = g.clone();
            async move {
                g.notified().await;
                Ok::<_, JobError>(json!("encoded"))
            }
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    node.enqueue(NewItem::new("video", json!({"n": 1})))
        .await
        .unwrap();
    node.enqueue(NewItem::new("video", json!({"n": 2})))
        .await
        .unwrap();
    let mut acquired = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while acquired < 2 {
            match events.recv().await {
                Ok(NodeEvent::Acquired { .. }) => acquired += 1,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
    })
    .await
    .expect("both workers acquired in time");

    let mut cfg = DashboardConfig::new(loopback()).token(TOKEN);
    cfg.refresh = Duration::from_millis(500);
    let (addr, _stop) = serve(store.clone(), cfg).await;
    let url = format!("http://{addr}/#token={TOKEN}");
    let profile = tempfile::tempdir().unwrap();
    // The page reads the store at some time within [t0, t1].
    let nodes_before = store.nodes_list().await.unwrap();
    let t0 = SystemClock.now();
    let dom = run_chromium(profile.path(), &url, &["--dump-dom"]).await;
    let t1 = SystemClock.now();
    // Kept beside the screenshot, to see what the page showed when an assertion fails.
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-test");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("dashboard.html"), &dom).unwrap();

    // What the store holds now (nothing moves: the workers are blocked, the rest finished).
    let counts = store.items_count().await.unwrap();
    let nodes = store.nodes_list().await.unwrap();
    let workers = WorkerCounts::of(&nodes, SystemClock.now(), 3);

    let loaded = dom
        .find("data-loaded=\"")
        .map(|i| dom[i + 13..].split('"').next().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        loaded.parse::<u32>().is_ok_and(|n| n >= 1),
        "the page never loaded its data (data-loaded={loaded:?}); its error banner says {:?}",
        text_of(&dom, "error")
    );
    // Refreshing every 500 ms within a 4 s (virtual) budget: it must have refreshed itself.
    assert!(
        loaded.parse::<u32>().is_ok_and(|n| n >= 2),
        "the page loaded its data once and never refreshed itself (data-loaded={loaded:?})"
    );
    for st in ItemStatus::ALL {
        assert_eq!(
            number(&dom, &format!("count-{st}")),
            counts.get(st),
            "count of {st}"
        );
    }
    assert_eq!(
        counts.in_progress, 4,
        "2 held by the tree, 1 by alpha, 1 by the dead ghost"
    );
    assert_eq!(number(&dom, "count-total"), counts.total());

    // Queue depth by kind: one row per kind with open work, as the store counts it.
    let depth = store.items_depth_by_kind().await.unwrap();
    assert_eq!(
        dom.matches("<tr data-kind=\"").count(),
        depth.len(),
        "kinds shown"
    );
    for k in &depth {
        let c = cells(&dom, "data-kind", &k.kind);
        assert_eq!(
            c[..4],
            [
                k.kind.clone(),
                k.pending.to_string(),
                k.in_progress.to_string(),
                "no".to_string()
            ],
            "open work of kind {}",
            k.kind
        );
        assert!(
            c[4].contains(&format!("data-action=\"pause\" data-kind=\"{}\"", k.kind)),
            "a Pause button: {:?}",
            c[4]
        );
    }
    assert_eq!(
        depth.len(),
        3,
        "email, report and the tree's video: {depth:?}"
    );
    assert_eq!(number(&dom, "workers-alive"), workers.alive);
    assert_eq!(number(&dom, "workers-dead"), workers.dead);
    assert_eq!(number(&dom, "workers-stopped"), workers.stopped);
    assert_eq!((workers.alive, workers.dead, workers.stopped), (2, 1, 1));
    assert_eq!(row_state(&dom, "live"), "alive");
    assert_eq!(row_state(&dom, "ghost"), "dead");
    assert_eq!(row_state(&dom, "charlie"), "stopped");

    // Every worker row: its state, current item and seconds since its heartbeat. Rows that
    // did not change while the page loaded must show exactly what the store holds (seconds
    // within the load window, shown to 0.1 s); the tree's own row heartbeats meanwhile, so
    // it must show one of the items it holds and a silence within its alive window.
    assert_eq!(dom.matches("<tr data-node=\"").count(), nodes.len());
    let live_items: Vec<String> = store
        .items_list(&ItemFilter {
            status: Some(ItemStatus::InProgress),
            limit: 100,
            ..ItemFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.owner_node.as_deref() == Some("live"))
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(live_items.len(), 2, "the tree holds both its items");
    for n in &nodes {
        let c = cells(&dom, "data-node", &n.node_id);
        let state = n.state(t1, 3);
        assert_eq!(
            (c[0].as_str(), c[1].as_str()),
            (n.node_id.as_str(), state.as_str())
        );
        let shown = seconds(&c[5]);
        if nodes_before.contains(n) {
            let item = n.current_item.map_or("–".to_string(), |i| i.to_string());
            assert_eq!(c[3], item, "current item of {}", n.node_id);
            let low = t0.since(n.last_heartbeat_at).as_secs_f64() - 0.06;
            let high = t1.since(n.last_heartbeat_at).as_secs_f64() + 0.06;
            assert!(
                (low..=high).contains(&shown),
                "{} shows {shown} s since its heartbeat, not within {low}..{high}",
                n.node_id
            );
        } else {
            assert_eq!(n.node_id, "live", "only the tree's row moves");
            assert_eq!(state, WorkerState::Alive);
            assert!(live_items.contains(&c[3]), "live shows item {:?}", c[3]);
            let window = 3.0 * n.heartbeat_interval_ms as f64 / 1000.0;
            assert!(shown <= window, "live silent {shown} s > {window} s");
        }
    }

    // The chart: one rect per minute and series, carrying its count.
    assert_eq!(sum_attr(&dom, "data-completed"), counts.completed);
    assert_eq!(sum_attr(&dom, "data-failed"), counts.failed);
    assert_eq!(number(&dom, "chart-completed"), 2);
    assert_eq!(number(&dom, "chart-failed"), 1);

    // The failures, newest first, each with its error shown as text: the markup in the
    // error did not run.
    let failed = store
        .items_recently_finished(ItemStatus::Failed, RECENT_FAILURES)
        .await
        .unwrap();
    assert_eq!(dom.matches("<tr data-id=\"").count(), failed.len());
    assert_eq!(failed.first().map(|i| i.id.0), Some(expected.failed_id));
    for f in &failed {
        let c = cells(&dom, "data-id", &f.id.to_string());
        assert_eq!(c[0], f.id.to_string());
        assert_eq!(c[1], f.kind);
        assert_eq!(c[2], format!("{}/{}", f.attempts, f.max_attempts));
        assert_eq!(
            Some(c[4].as_str()),
            f.error.as_deref(),
            "error of item {}",
            f.id
        );
    }
    assert_eq!(failed[0].error.as_deref(), Some(common::FAILURE_ERROR));
    assert!(
        dom.contains("boom: &lt;script&gt;"),
        "the error text is escaped"
    );
    assert!(
        dom.contains("<title>leasehold dashboard</title>"),
        "the error's script ran"
    );

    assert_eq!(number(&dom, "recovery-recovered"), 6);
    assert_eq!(number(&dom, "recovery-on-start"), 2);
    assert_eq!(number(&dom, "recovery-reaper"), 3);
    assert_eq!(number(&dom, "recovery-monitor"), 1);
    assert_eq!(number(&dom, "recovery-expired"), 1);
    assert_eq!(number(&dom, "recovery-held"), 1);

    // A screenshot for people, kept in the test's output directory.
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        profile.path(),
        &url,
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    let size = std::fs::metadata(&shot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()))
        .len();
    assert!(
        size > 10_000,
        "screenshot of {size} bytes is too small to show the page"
    );
    eprintln!(
        "dashboard screenshot ({} via {}): {}",
        size,
        chromium_bin.display(),
        shot.display()
    );

    gate.notify_waiters();
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The `href` of the first link inside the table row whose tag carries `attr="value"`.
fn row_link(dom: &str, attr: &str, value: &str) -> String {
    let at = dom
        .find(&format!("<tr {attr}=\"{value}\""))
        .unwrap_or_else(|| panic!("no table row with {attr}={value:?}"));
    let row = &dom[at..at + dom[at..].find("</tr>").expect("row end")];
    let h = row.find("href=\"").expect("a link in the row") + "href=\"".len();
    unescape(&row[h..h + row[h..].find('"').unwrap()])
}

/// The items view and an item page in a real browser over a real SQLite file: the view
/// filtered by kind lists exactly that kind's items, each linking to its page; following the
/// link of a durable task's item opens its page, which shows the item's output, its
/// checkpoints with their evidence, its tool-ledger entry and its LLM cache key. (Headless
/// Chromium's `--dump-dom` cannot click: the test follows the row's link as a click would,
/// and the filter is the query string the filter form submits.) A screenshot of the item
/// page is kept beside the overview's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_view_filters_and_links_to_an_item_page_with_its_durable_records() {
    let test = "items_view_filters_and_links_to_an_item_page_with_its_durable_records";
    if chromium_for(test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(
        leasehold_sqlite::SqliteStore::open(dir.path().join("items.db"))
            .await
            .unwrap(),
    );
    let store: Arc<dyn leasehold_core::Store> = sqlite.clone();
    let now = SystemClock.now();
    let ids = store
        .items_enqueue(
            vec![
                NewItem::new("research", json!({"topic": "leases"})).group("g-7"),
                NewItem::new("email", json!({"to": "ops@example.invalid"})),
                NewItem::new("research", json!({"topic": "fencing"})),
            ],
            now,
        )
        .await
        .unwrap();
    // The first research item runs a durable task: one step whose tool call is recorded in
    // the ledger with an exit-code evidence, and an LLM call cached under the item.
    let leased = store
        .item_acquire(
            &leasehold_core::AcquireRequest::new("browser/w0", Duration::from_secs(600))
                .kinds(["research"]),
            now,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.item.id, ids[0]);
    let runner = leasehold_durable::TaskRunner::new(sqlite.clone(), Arc::new(SystemClock));
    let done = runner
        .run_with_recovery(leased.lease.clone(), |task| async move {
            task.step("fetch", |t| async move {
                let page = t
                    .tool("http", "GET /papers?q=leases", || async {
                        Ok::<_, leasehold_durable::DurableError>(leasehold_durable::ToolOutput {
                            result: json!({"status": 200, "papers": 3}),
                            evidence: vec![leasehold_durable::Evidence::CommandExit {
                                description: "the fetch exited cleanly".into(),
                                command: "curl /papers?q=leases".into(),
                                expected: 0,
                                observed: 0,
                            }],
                        })
                    })
                    .await?;
                let summary = t
                    .llm("summarise", "summarise the papers", "model-s", || async {
                        Ok(json!("three papers on leases"))
                    })
                    .await?;
                Ok(json!({"papers": page.result, "summary": summary}))
            })
            .await
        })
        .await
        .expect("the durable task runs");
    store
        .item_complete(&leased.lease, done.output.clone(), SystemClock.now())
        .await
        .unwrap();
    let ledger = leasehold_core::durable::DurableStore::ledger_history(sqlite.as_ref(), ids[0], 10)
        .await
        .unwrap();
    assert_eq!(ledger.len(), 1);
    let cache =
        leasehold_core::durable::DurableStore::cache_entries_of(sqlite.as_ref(), ids[0], 10)
            .await
            .unwrap();
    assert_eq!(cache.len(), 1);

    let cfg = DashboardConfig::new(loopback())
        .token(TOKEN)
        .durable(sqlite.clone());
    let (addr, _stop) = serve(store.clone(), cfg).await;
    let profile = tempfile::tempdir().unwrap();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-test");
    std::fs::create_dir_all(&out_dir).unwrap();

    // The items view, filtered by kind.
    let list_url = format!("http://{addr}/items?kind=research#token={TOKEN}");
    let dom = run_chromium(profile.path(), &list_url, &["--dump-dom"]).await;
    std::fs::write(out_dir.join("items.html"), &dom).unwrap();
    assert!(
        dom.contains("data-loaded=\"") && !dom.contains("data-loaded=\"0\""),
        "the items view never loaded; its error banner says {:?}",
        text_of(&dom, "error")
    );
    assert_eq!(
        dom.matches("<tr data-item=\"").count(),
        2,
        "two research items"
    );
    assert!(
        !dom.contains(&format!("<tr data-item=\"{}\"", ids[1])),
        "the email item is filtered out"
    );
    let first = cells(&dom, "data-item", &ids[0].to_string());
    assert!(
        first[0].ends_with(&format!(">{}</a>", ids[0])),
        "{:?}",
        first[0]
    );
    assert_eq!(
        (first[1].as_str(), first[2].as_str(), first[4].as_str()),
        ("research", "completed", "g-7")
    );
    assert_eq!(number(&dom, "items-shown"), 2);

    // Through the row's link to the item page.
    let href = row_link(&dom, "data-item", &ids[0].to_string());
    assert_eq!(href, format!("/items/{}#token={TOKEN}", ids[0]));
    let item_url = format!("http://{addr}{href}");
    let dom = run_chromium(profile.path(), &item_url, &["--dump-dom"]).await;
    std::fs::write(out_dir.join("item.html"), &dom).unwrap();
    assert_eq!(
        text_of(&dom, "item-id"),
        ids[0].to_string(),
        "error banner: {:?}",
        text_of(&dom, "error")
    );
    assert_eq!(text_of(&dom, "item-status"), "completed");
    assert_eq!(text_of(&dom, "item-kind"), "research");
    assert!(text_of(&dom, "item-owner").starts_with("browser/w0"));
    assert!(unescape(&text_of(&dom, "item-output")).contains("three papers on leases"));
    assert!(unescape(&text_of(&dom, "item-input")).contains("\"topic\": \"leases\""));

    let records =
        leasehold_core::durable::DurableStore::checkpoints_of(sqlite.as_ref(), ids[0], 10)
            .await
            .unwrap();
    assert_eq!(dom.matches("<tr data-checkpoint=\"").count(), records.len());
    let tool_cp = records
        .iter()
        .find(|c| c.checkpoint_type == leasehold_durable::CheckpointType::ToolExecuted)
        .expect("the tool's checkpoint");
    let c = cells(&dom, "data-checkpoint", &tool_cp.id.to_string());
    assert_eq!(c[4], "tool_executed");
    assert_eq!(c[5], "committed");
    assert!(
        c[6].contains("the fetch exited cleanly"),
        "evidence shown: {:?}",
        c[6]
    );
    let step_cp = records
        .iter()
        .find(|c| c.name == "fetch")
        .expect("the step's checkpoint");
    assert_eq!(
        cells(&dom, "data-checkpoint", &step_cp.id.to_string())[3],
        "fetch"
    );

    let l = cells(&dom, "data-ledger", &ledger[0].id.to_string());
    assert_eq!(
        (l[1].as_str(), l[2].as_str()),
        ("http", "GET /papers?q=leases")
    );
    assert!(l[5].contains("\"papers\": 3"), "ledger result: {:?}", l[5]);
    let k = cells(&dom, "data-cache", &cache[0].key);
    assert_eq!(
        (k[0].as_str(), k[1].as_str(), k[2].as_str()),
        (cache[0].key.as_str(), "ready", "summarise")
    );
    // The places kept for the attempt history and the actions.
    assert!(dom.contains("id=\"item-history\""));
    assert!(dom.contains("id=\"item-actions\""));

    // A screenshot of the item page.
    let shot = out_dir.join("item-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        profile.path(),
        &item_url,
        &[
            "--window-size=1200,1400",
            &format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    let size = std::fs::metadata(&shot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()))
        .len();
    assert!(
        size > 10_000,
        "screenshot of {size} bytes is too small to show the page"
    );
    eprintln!("item page screenshot ({size} bytes): {}", shot.display());
}

/// The opening tag of the element whose tag contains `needle` (e.g. `id="action-retry"`).
fn tag_with<'a>(dom: &'a str, needle: &str) -> Option<&'a str> {
    let at = dom.find(needle)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// The value of `name="…"` in an opening tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(unescape(&tag[at..at + tag[at..].find('"')?]))
}

/// The cells of every row of the attempt history table, oldest first.
fn history_rows(dom: &str) -> Vec<Vec<String>> {
    let at = dom
        .find("id=\"item-history-rows\"")
        .expect("the history table");
    let body = &dom[at..at + dom[at..].find("</tbody>").expect("its end")];
    body.split("<tr data-attempt=\"")
        .skip(1)
        .map(|r| cells(body, "data-attempt", r.split('"').next().unwrap()))
        .collect()
}

/// Waits for the first event `pick` accepts.
async fn wait_for<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    what: &str,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within 30 s"))
}

/// The operators' buttons with a real tree running: the item page of a dead-lettered item
/// shows its attempt history and a Retry button (and no Cancel); a running item's page a
/// Cancel button (and no Retry); an awaiting item's page the decision form with its question
/// and answers. Then the test sends the POSTs those buttons send (headless Chromium's
/// `--dump-dom` cannot click) with the token: the retried item runs again and completes, the
/// cancelled running item's handler is stopped and the item ends `cancelled`, the decided
/// item resumes with its answer and completes — and each page shows it. The overview shows
/// the paused kind with its Resume button, the awaiting item linked to its page, each
/// worker's task text, the dead node's banner and the health indicator. A screenshot of the
/// item page is kept as `item-actions.png` beside the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_buttons_retry_a_failed_item_and_cancel_a_running_one() {
    let test = "action_buttons_retry_a_failed_item_and_cancel_a_running_one";
    if chromium_for(test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let builder = Leasehold::builder(store.clone())
        .node_id("ops")
        .monitor(false)
        .reaper(false)
        .workers(3)
        .lease(Duration::from_secs(10))
        .heartbeat(Duration::from_millis(200))
        .poll_interval(Duration::from_millis(100))
        .handler("flaky", move |_ctx: JobContext| {
            let h = h.clone();
            async move {
                if h.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(json!("fixed"))
                } else {
                    Err(JobError::permanent("upstream API is down"))
                }
            }
        })
        .handler("slow", |ctx: JobContext| async move {
            ctx.set_task("Encoding video 1");
            // Runs until cancelled: only an operator's cancel ends it.
            std::future::pending::<()>().await;
            Ok::<_, JobError>(json!("never"))
        })
        .handler("ask", |ctx: JobContext| async move {
            match ctx.decision() {
                Some(answer) => Ok(json!({ "decided": answer })),
                None => Err(JobError::awaiting_decision(
                    leasehold_core::DecisionRequest::new(
                        "No contact found for acme.example: what now?",
                        ["skip", "manual"],
                    ),
                )),
            }
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let flaky = node
        .enqueue(NewItem::new("flaky", json!({"n": 1})))
        .await
        .unwrap();
    wait_for(&mut events, "dead-lettering", |e| match e {
        NodeEvent::AttemptFailed {
            item,
            dead_lettered: true,
        } if *item == flaky => Some(()),
        _ => None,
    })
    .await;
    let slow = node
        .enqueue(NewItem::new("slow", json!({"n": 2})))
        .await
        .unwrap();
    wait_for(&mut events, "the slow item's acquisition", |e| match e {
        NodeEvent::Acquired { item, .. } if *item == slow => Some(()),
        _ => None,
    })
    .await;
    let ask = node
        .enqueue(NewItem::new("ask", json!({"lead": "acme.example"})))
        .await
        .unwrap();
    wait_for(&mut events, "the park", |e| match e {
        NodeEvent::Parked { item, .. } if *item == ask => Some(()),
        _ => None,
    })
    .await;
    // A dead node beside the live tree, for the banner.
    let old = SystemClock.now().minus(Duration::from_secs(600));
    store
        .node_heartbeat(&leasehold_core::NodeRecord {
            node_id: "ghost".into(),
            incarnation: 4,
            worker_type: "*".into(),
            status: leasehold_core::NodeStatus::Processing,
            current_item: None,
            task_text: None,
            last_heartbeat_at: old,
            heartbeat_interval_ms: 10_000,
            started_at: old,
            metadata: json!({}),
        })
        .await
        .unwrap();
    // The registry row carries the worker's task text from the tree's next beat (every
    // 200 ms; there is no event for a beat, so this waits on the store, bounded).
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let rows = store.nodes_list().await.unwrap();
            if rows
                .iter()
                .any(|n| n.node_id == "ops" && n.metadata.to_string().contains("Encoding video 1"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the tree's registry row shows its worker's task text");

    let mut cfg = DashboardConfig::new(loopback()).token(TOKEN);
    cfg.refresh = Duration::from_millis(500);
    let (addr, _stop) = serve(store.clone(), cfg).await;
    let profile = tempfile::tempdir().unwrap();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-test");
    std::fs::create_dir_all(&out_dir).unwrap();
    let page = |path: String, name: &'static str| {
        let url = format!("http://{addr}{path}#token={TOKEN}");
        let profile = profile.path().to_path_buf();
        let out = out_dir.join(name);
        async move {
            let dom = run_chromium(&profile, &url, &["--dump-dom"]).await;
            std::fs::write(out, &dom).unwrap();
            assert!(
                !dom.contains("data-loaded=\"0\""),
                "{url} never loaded; its error banner says {:?}",
                text_of(&dom, "error")
            );
            dom
        }
    };
    let send = |path: String, body: &'static str| async move {
        let r = common::post(addr, &path, Some(TOKEN), body).await;
        assert_eq!(r.status, 200, "POST {path}: {}", r.body);
        r.json()
    };

    // The overview, with a kind paused through the same POST its Pause button sends.
    send("/api/kinds/slow/pause".into(), "{}").await;
    let dom = page("/".into(), "actions-overview.html").await;
    let banner = tag_with(&dom, "id=\"dead-banner\"").expect("the banner");
    assert!(
        attr(banner, "hidden").is_none(),
        "the banner shows: {banner}"
    );
    assert!(
        text_of(&dom, "dead-banner").contains("ghost (incarnation 4)"),
        "{}",
        text_of(&dom, "dead-banner")
    );
    assert_eq!(text_of(&dom, "health"), "degraded");
    let resume = tag_with(&dom, "data-action=\"resume\" data-kind=\"slow\"")
        .expect("a Resume button for the paused kind");
    assert!(resume.starts_with("<button"), "{resume}");
    assert_eq!(cells(&dom, "data-paused", "slow")[0], "slow");
    assert_eq!(cells(&dom, "data-kind", "slow")[3], "paused");
    let awaiting = row_link(&dom, "data-awaiting", &ask.to_string());
    assert_eq!(awaiting, format!("/items/{ask}#token={TOKEN}"));
    assert!(cells(&dom, "data-awaiting", &ask.to_string())[2].contains("No contact found"));
    let busy = dom
        .split("<tr data-worker=\"")
        .skip(1)
        .find(|r| r.contains("Encoding video 1"))
        .expect("a worker row with the handler's task text");
    assert!(
        busy.contains(&format!(">{slow}</a>")),
        "it links its item: {busy}"
    );
    send("/api/kinds/slow/resume".into(), "{}").await;

    // The dead-lettered item: history and Retry, no Cancel.
    let dom = page(format!("/items/{flaky}"), "actions-failed.html").await;
    assert_eq!(text_of(&dom, "item-status"), "failed");
    let retry = tag_with(&dom, "id=\"action-retry\"").expect("a Retry button");
    assert_eq!(attr(retry, "data-action").as_deref(), Some("retry"));
    assert_eq!(attr(retry, "data-item"), Some(flaky.to_string()));
    assert!(
        !dom.contains("id=\"action-cancel\""),
        "no Cancel on a failed item"
    );
    let delete = tag_with(&dom, "id=\"action-delete\"").expect("a Delete button");
    assert_eq!(attr(delete, "data-action").as_deref(), Some("delete"));
    assert_eq!(attr(delete, "data-item"), Some(flaky.to_string()));
    assert_eq!(history_rows(&dom).len(), 1);
    assert_eq!(history_rows(&dom)[0][6], "failed");
    assert_eq!(text_of(&dom, "item-attempts"), "1 of 3");

    // The running item: Cancel, no Retry.
    let dom = page(format!("/items/{slow}"), "actions-running.html").await;
    assert_eq!(text_of(&dom, "item-status"), "in_progress");
    let cancel = tag_with(&dom, "id=\"action-cancel\"").expect("a Cancel button");
    assert_eq!(attr(cancel, "data-action").as_deref(), Some("cancel"));
    assert_eq!(attr(cancel, "data-item"), Some(slow.to_string()));
    assert!(
        !dom.contains("id=\"action-retry\""),
        "no Retry on a running item"
    );
    assert!(
        !dom.contains("id=\"action-delete\""),
        "no Delete on a running item"
    );

    // The awaiting item: the decision form with its question and answers.
    let dom = page(format!("/items/{ask}"), "actions-awaiting.html").await;
    assert_eq!(text_of(&dom, "item-status"), "awaiting");
    assert_eq!(
        text_of(&dom, "decide-question"),
        "No contact found for acme.example: what now?"
    );
    let options: Vec<&str> = dom
        .split("<option value=\"")
        .skip(1)
        .filter_map(|o| o.split('"').next())
        .filter(|o| ["skip", "manual"].contains(o))
        .collect();
    assert_eq!(options, ["skip", "manual"]);
    let decide = tag_with(&dom, "id=\"action-decide\"").expect("a Decide button");
    assert_eq!(attr(decide, "data-item"), Some(ask.to_string()));

    // Retry: the upstream is back; the item runs again and completes.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = send(format!("/api/items/{flaky}/retry"), "{}").await;
    assert_eq!(report["items"][0]["to"], "pending");
    wait_for(&mut events, "the retried item's completion", |e| match e {
        NodeEvent::Completed { item, .. } if *item == flaky => Some(()),
        _ => None,
    })
    .await;
    let dom = page(format!("/items/{flaky}"), "actions-retried.html").await;
    assert_eq!(text_of(&dom, "item-status"), "completed");
    assert_eq!(
        dom.matches("<tr data-attempt=\"").count(),
        2,
        "both attempts"
    );
    assert!(dom.contains("data-outcome=\"completed\""));
    assert!(
        !dom.contains("data-action=\"retry\""),
        "nothing to retry now"
    );

    // Cancel: the running handler is stopped at its next renewal; the item ends cancelled.
    send(format!("/api/items/{slow}/cancel"), "{}").await;
    let confirmed = wait_for(&mut events, "the cancel", |e| match e {
        NodeEvent::Cancelled {
            item, confirmed, ..
        } if *item == slow => Some(*confirmed),
        _ => None,
    })
    .await;
    assert!(confirmed, "the worker's cancel was written");
    let dom = page(format!("/items/{slow}"), "actions-cancelled.html").await;
    assert_eq!(text_of(&dom, "item-status"), "cancelled");
    assert_eq!(
        history_rows(&dom).last().map(|r| r[6].clone()).as_deref(),
        Some("cancelled")
    );
    assert!(
        tag_with(&dom, "id=\"action-retry\"").is_some(),
        "a cancelled item can be retried"
    );
    assert!(!dom.contains("id=\"action-cancel\""));

    // Decide: the parked item resumes with the answer and completes.
    send(
        format!("/api/items/{ask}/decide"),
        "{\"answer\": \"manual\"}",
    )
    .await;
    wait_for(&mut events, "the decided item's completion", |e| match e {
        NodeEvent::Completed { item, .. } if *item == ask => Some(()),
        _ => None,
    })
    .await;
    let done = store.item_get(ask).await.unwrap().unwrap();
    assert_eq!(done.output, Some(json!({ "decided": "manual" })));

    // A screenshot of an item page with its history and a button.
    let shot = out_dir.join("item-actions.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        profile.path(),
        &format!("http://{addr}/items/{flaky}#token={TOKEN}"),
        &[
            "--window-size=1200,1400",
            &format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000);
    eprintln!("item page with actions: {}", shot.display());

    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
