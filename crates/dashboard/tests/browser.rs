//! The page in a real browser: the dashboard serves a real SQLite file with work in flight (a
//! running tree whose workers hold items, plus a dead node, a stopped one, finished and
//! dead-lettered items), headless Chromium loads the page with the token in its fragment and
//! runs its script, and the numbers the page shows must match the store. A screenshot is kept
//! in `<target>/tmp/dashboard-test/dashboard.png`.
//!
//! Chromium is required: when it cannot be found the test fails (it does not skip), saying how
//! to install it. `.ci/run` installs Debian's `chromium`; `LEASEHOLD_CHROMIUM` names another
//! binary.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, Notify};

use leasehold_core::{Clock, ItemStatus, NewItem, SystemClock, WorkerCounts};
use leasehold_dashboard::DashboardConfig;
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};

use common::{loopback, open, populate, serve};

const TOKEN: &str = "browser-test-token";

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("LEASEHOLD_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "headless Chromium not found on PATH (looked for chromium, chromium-browser, \
         google-chrome, chrome): install Debian's package with `apt-get install -y chromium` \
         (.ci/run does this) or set LEASEHOLD_CHROMIUM to a Chromium binary"
    );
}

/// Runs headless Chromium on `url` with `extra` flags and returns its stdout.
async fn run_chromium(profile: &Path, url: &str, extra: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
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
    let chromium_bin = chromium();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let expected = populate(store.as_ref(), SystemClock.now()).await;

    // Work in flight: a real tree whose two workers hold an item each until released.
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let builder = Leasehold::builder(store.clone())
        .node_id("live")
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
    let dom = run_chromium(profile.path(), &url, &["--dump-dom"]).await;
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
    assert_eq!(number(&dom, "workers-alive"), workers.alive);
    assert_eq!(number(&dom, "workers-dead"), workers.dead);
    assert_eq!(number(&dom, "workers-stopped"), workers.stopped);
    assert_eq!((workers.alive, workers.dead, workers.stopped), (2, 1, 1));
    assert_eq!(row_state(&dom, "live"), "alive");
    assert_eq!(row_state(&dom, "ghost"), "dead");
    assert_eq!(row_state(&dom, "charlie"), "stopped");

    // The chart: one rect per minute and series, carrying its count.
    assert_eq!(sum_attr(&dom, "data-completed"), counts.completed);
    assert_eq!(sum_attr(&dom, "data-failed"), counts.failed);
    assert_eq!(number(&dom, "chart-completed"), 2);
    assert_eq!(number(&dom, "chart-failed"), 1);

    // The failure, its error shown as text: the markup in it did not run.
    assert!(dom.contains(&format!("data-id=\"{}\"", expected.failed_id)));
    assert!(
        dom.contains("boom: &lt;script&gt;"),
        "the error text is escaped"
    );
    assert!(
        dom.contains("<title>leasehold dashboard</title>"),
        "the error's script ran"
    );

    assert_eq!(number(&dom, "recovery-recovered"), 6);
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
