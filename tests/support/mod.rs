//! What the process-kill tests share: run one of this test binary's own ignored tests as a
//! child process, wait for the line that says it reached the point to kill it at, SIGKILL it;
//! in the child, stop a SQLite store right before the commit to kill it at.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use leasehold::SqliteStore;

/// What a child prints when it has reached the commit it is to be killed at.
pub const AT_COMMIT: &str = "AT_COMMIT";

/// In the child: right before the group transaction that carries an `op` call (`complete`,
/// `complete_with_follow_ups`, …) commits, prints [`AT_COMMIT`] and holds the connection thread
/// (and with it the commit) until the parent kills the process.
#[allow(dead_code)] // the PostgreSQL kill test stops its batch its own way
pub fn hold_group_commit_of(sqlite: &SqliteStore, op: &'static str) {
    sqlite.set_group_commit_hook(Some(Arc::new(move |ops: &[&'static str]| {
        if ops.contains(&op) {
            println!("{AT_COMMIT}");
            std::io::Write::flush(&mut std::io::stdout()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    })));
}

/// Runs the ignored test `child_test` of this binary as a child process with `var` set to
/// `value`, reads its standard output until a line contains `marker`, then SIGKILLs it and
/// waits for it. Returns the lines read, the marker's included. Panics with `waiting_for` when
/// no such line comes within 60 s.
pub fn kill_child_at(
    child_test: &str,
    var: &str,
    value: impl AsRef<OsStr>,
    marker: &str,
    waiting_for: &str,
) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{waiting_for}"));
        // libtest prints "test <name> ... " without a newline first: match within the line.
        let done = line.contains(marker);
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    lines
}
