//! The pipeline example's crash-and-rerun scenario, on a real database file with real child
//! processes: a clean run; a run that aborts itself after some tool executions
//! (`--crash-after`, a real `std::process::abort`); a rerun on the crashed run's database,
//! which must resume from checkpoints, replay the tool calls that had completed, and end
//! with the clean run's counts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The example's binary, built by this test's own cargo (a no-op when it is up to date), so
/// `cargo test --test pipeline` never runs a stale build.
fn pipeline_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--example", "pipeline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "building the pipeline example failed");
    profile_dir
        .join("examples")
        .join(format!("pipeline{}", std::env::consts::EXE_SUFFIX))
}

/// Small and fast, but with injected failures: 16 leads in batches of 4, one worker so that
/// the crash point is the same on every run.
fn run(bin: &Path, db: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--db",
        db.to_str().expect("utf-8 path"),
        "--leads",
        "16",
        "--batch",
        "4",
        "--workers",
        "1",
        "--seed",
        "11",
        "--latency-ms",
        "2",
        "--retry-base-ms",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    Command::new(bin)
        .args(&args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run the pipeline")
}

fn summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pipeline failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count in {v}"))
}

#[test]
fn a_crashed_pipeline_resumes_replays_and_ends_like_a_clean_run() {
    let bin = pipeline_bin();
    let dir = tempfile::tempdir().expect("tempdir");

    let clean = summary(&run(&bin, &dir.path().join("clean.db"), &[]));
    for key in [
        "completed",
        "failed",
        "retries",
        "llm_cache_hits",
        "llm_calls",
        "tool_executions",
        "tool_replays",
        "resumed_from_checkpoint",
        "elapsed_ms",
    ] {
        n(&clean, key);
    }
    assert!(n(&clean, "completed") > 0, "{clean}");
    assert_eq!(n(&clean, "completed") + n(&clean, "failed"), 16, "{clean}");
    assert_eq!(n(&clean, "tool_replays"), 0, "{clean}");
    assert_eq!(n(&clean, "resumed_from_checkpoint"), 0, "{clean}");
    assert!(
        n(&clean, "retries") > 0,
        "the seed injects failures: {clean}"
    );

    // Tool execution 6 is the second lead of the second batch: the first lead's step has
    // committed, the second's tool result has committed, its step has not.
    let crashed_db = dir.path().join("crashed.db");
    let crashed = run(&bin, &crashed_db, &["--crash-after", "6"]);
    assert!(
        !crashed.status.success(),
        "--crash-after did not crash: {}",
        String::from_utf8_lossy(&crashed.stdout)
    );
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("aborting after tool execution 6"));

    let rerun = summary(&run(&bin, &crashed_db, &[]));
    assert!(n(&rerun, "resumed_from_checkpoint") > 0, "{rerun}");
    assert!(n(&rerun, "tool_replays") > 0, "{rerun}");
    assert_eq!(
        n(&rerun, "completed"),
        n(&clean, "completed"),
        "{rerun} vs {clean}"
    );
    assert_eq!(
        n(&rerun, "failed"),
        n(&clean, "failed"),
        "{rerun} vs {clean}"
    );
    // Nothing ran twice: the crashed run's 6 executions plus the rerun's are the clean run's.
    assert_eq!(
        6 + n(&rerun, "tool_executions"),
        n(&clean, "tool_executions"),
        "{rerun} vs {clean}"
    );

    // A third run on the finished database does nothing and reports the same totals.
    let again = summary(&run(&bin, &crashed_db, &[]));
    assert_eq!(n(&again, "completed"), n(&clean, "completed"));
    assert_eq!(n(&again, "tool_executions"), 0, "{again}");

    // Bad input is refused with a message and leaves the database alone.
    let bad = run(&bin, &crashed_db, &["--leads", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--leads"));
}
