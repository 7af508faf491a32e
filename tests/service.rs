//! The service example as a real process over a real SQLite file: jobs go in over HTTP, SIGTERM
//! arrives while two jobs run — one finishes within the grace, the other outlasts it and is
//! released — the process exits 0, a restart under the same node id takes the released job
//! up, and each job completes exactly once (by the process the journal and the output name).
//!
//! The child processes are this test binary re-run with only the ignored entry below selected,
//! which runs the example's `run` (the code `cargo run --example service` runs), so the test
//! never depends on a separately built, possibly stale, example binary. The test follows the
//! child's JSON log lines on stderr (events, not sleeps) and talks HTTP/1.1 over a TcpStream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};

#[allow(dead_code)]
#[path = "../examples/service.rs"]
mod service;

/// The environment variable that carries a child process's service arguments (JSON).
const CHILD_ARGS: &str = "LEASEHOLD_SERVICE_CHILD_ARGS";
/// How long the test waits for anything before it fails.
const WAIT: Duration = Duration::from_secs(60);

/// The body of the child processes: this test binary, re-run with only this (ignored) entry
/// selected. Exits 1 with the error on stderr, like the example.
#[test]
#[ignore = "the child-process entry of sigterm_mid_job_drains_and_a_restart_completes_each_job_once"]
fn service_child_process() {
    let raw = std::env::var(CHILD_ARGS).expect("run only as a child process");
    let args: Vec<String> = serde_json::from_str(&raw).expect("child arguments");
    let args = service::Args::try_parse_from(std::iter::once("service".to_string()).chain(args))
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2);
        });
    service::init_tracing(args.log_format);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if let Err(e) = rt.block_on(service::run(args)) {
        eprintln!("service: {e}");
        std::process::exit(1);
    }
}

/// A running service process: its address, and its log lines as they come.
struct Service {
    child: Child,
    addr: String,
    logs: mpsc::Receiver<Value>,
}

impl Service {
    fn start(dir: &Path) -> Service {
        let args = json!([
            "--db",
            dir.join("service.db"),
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--node-id",
            "service-test",
            "--grace-s",
            "3",
            "--log-format",
            "json",
            "--journal",
            dir.join("journal.txt"),
        ]);
        let mut child = Command::new(std::env::current_exe().expect("test executable"))
            .args([
                "service_child_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ARGS, args.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the service");
        let (addr_tx, addr_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The test harness starts the line (`test service_child_process ... `).
                let Some(at) = line.find(r#"{"listening""#) else {
                    continue;
                };
                if let Ok(v) = serde_json::from_str::<Value>(&line[at..]) {
                    if let Some(addr) = v["listening"].as_str() {
                        let _ = addr_tx.send(addr.to_string());
                    }
                }
            }
        });
        let (log_tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = log_tx.send(v);
                    }
                    // Not a log line (the test harness's own output, a panic): show it.
                    Err(_) => eprintln!("service: {line}"),
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(WAIT)
            .expect("the service prints its address");
        Service { child, addr, logs }
    }

    /// Waits for the log line with `message` whose fields satisfy `pick`.
    fn wait_log(&self, message: &str, mut pick: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let line = self
                .logs
                .recv_timeout(WAIT)
                .unwrap_or_else(|e| panic!("no log line {message:?}: {e}"));
            if line["message"] == message && pick(&line) {
                return line;
            }
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to end; returns its exit code.
    fn exit_code(mut self) -> Option<i32> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(self.child.wait());
        });
        rx.recv_timeout(WAIT)
            .expect("the service exits")
            .expect("wait")
            .code()
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http(&self.addr, method, path, body)
    }
}

/// One HTTP/1.1 exchange (`Connection: close`); the answer's status and JSON body.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (status, body)
}

fn item_of(line: &Value) -> i64 {
    line["item"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an item field")
}

#[test]
fn sigterm_mid_job_drains_and_a_restart_completes_each_job_once() {
    let dir = tempfile::tempdir().unwrap();

    let first = Service::start(dir.path());
    let first_pid = first.child.id();
    assert_eq!(
        first.request("GET", "/healthz", None),
        (200, json!({ "state": "running", "store_reachable": true }))
    );
    // Bad input is refused, naming the problem, and enqueues nothing.
    let (status, body) = first.request("POST", "/jobs", Some(&json!({ "ms": "soon" })));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"ms\""), "{body}");

    // One job that finishes within the 3 s grace, one that outlasts it.
    let (status, short) = first.request("POST", "/jobs", Some(&json!({ "ms": 1000 })));
    assert_eq!(status, 202, "{short}");
    let (status, long) = first.request("POST", "/jobs", Some(&json!({ "ms": 6000 })));
    assert_eq!(status, 202, "{long}");
    let (short, long) = (short["id"].as_i64().unwrap(), long["id"].as_i64().unwrap());
    assert_eq!(short, 1, "the refused request enqueued nothing");
    let mut running = std::collections::HashSet::new();
    while running.len() < 2 {
        running.insert(item_of(&first.wait_log("job started", |_| true)));
    }

    first.sigterm();
    first.wait_log(
        "draining: refusing new jobs, finishing in-flight ones",
        |_| true,
    );
    assert_eq!(
        first.request("GET", "/healthz", None),
        (503, json!({ "state": "draining" }))
    );
    let (status, _) = first.request("POST", "/jobs", Some(&json!({})));
    assert_eq!(status, 503, "no new job while draining");
    let drained = first.wait_log("drained", |_| true);
    // The long job was released; the short one finished during the drain (or, on a machine
    // slow enough to take a second between its start and the signal, just before it).
    assert_eq!(drained["released"], 1, "{drained}");
    assert_eq!(
        drained["finished"].as_u64().unwrap() + drained["idle"].as_u64().unwrap(),
        1,
        "{drained}"
    );
    assert_eq!(first.exit_code(), Some(0));

    // The restart (same node id: the stopped row is claimed at once) runs the released job.
    let second = Service::start(dir.path());
    let second_pid = second.child.id();
    let (status, done) = second.request("GET", &format!("/jobs/{long}?wait_s=30"), None);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["attempts"], 1,
        "the release gave its attempt back: {done}"
    );
    assert_eq!(done["output"]["pid"], second_pid, "{done}");
    let (_, done) = second.request("GET", &format!("/jobs/{short}"), None);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(
        done["output"]["pid"], first_pid,
        "finished during the drain: {done}"
    );
    assert_eq!(second.request("GET", "/jobs/99", None).0, 404);

    second.sigterm();
    second.wait_log("drained", |_| true);
    assert_eq!(second.exit_code(), Some(0));

    // Each job finished once; the long one started twice (cancelled by the drain, then run).
    let journal = std::fs::read_to_string(dir.path().join("journal.txt")).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    let count = |l: &str| lines.iter().filter(|x| **x == l).count();
    assert_eq!(count(&format!("done {short} {first_pid}")), 1, "{journal}");
    assert_eq!(count(&format!("done {long} {second_pid}")), 1, "{journal}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("done ")).count(),
        2,
        "{journal}"
    );
    assert_eq!(count(&format!("start {long} {first_pid}")), 1, "{journal}");
    assert_eq!(count(&format!("start {long} {second_pid}")), 1, "{journal}");
}
