//! Printing: JSON or text on stdout, plus the small formatting helpers the text views share
//! (tables, timestamps, durations).

use std::io::Write;
use std::time::Duration;

use leasehold_core::Timestamp;
use serde::Serialize;

use crate::error::CliError;

/// Where a subcommand's result goes, and in which form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    /// Text output, or JSON when `json`.
    pub(crate) fn new(json: bool) -> Self {
        Output { json }
    }

    /// Whether `--json` was given.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `value` as one line of compact JSON.
    pub(crate) fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let mut s = serde_json::to_string(value)
            .map_err(|e| CliError::failure(format!("cannot encode JSON output: {e}")))?;
        s.push('\n');
        write_stdout(&s)
    }

    /// Prints text as is, adding a final newline if missing.
    pub(crate) fn text(&self, text: &str) -> Result<(), CliError> {
        if text.ends_with('\n') || text.is_empty() {
            write_stdout(text)
        } else {
            write_stdout(&format!("{text}\n"))
        }
    }
}

/// Writes to stdout in one go. Errors are returned, not panicked on (`println!` panics when a
/// pager or `head` closes the pipe).
fn write_stdout(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::output)
}

/// Lays rows out in columns separated by two spaces; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A short human duration: `250ms`, `12s`, `4m05s`, `2h03m`, `3d04h`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    match s {
        _ if ms < 1_000 => format!("{ms}ms"),
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// `t` relative to `now`: `in 4m05s` or `12s ago`.
pub(crate) fn relative(t: Timestamp, now: Timestamp) -> String {
    if t > now {
        format!("in {}", duration(t.since(now)))
    } else {
        format!("{} ago", duration(now.since(t)))
    }
}

/// `s` on one line, cut to at most `max` characters with an ellipsis.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(duration(Duration::from_secs(7_380)), "2h03m");
        assert_eq!(relative(Timestamp(5_000), Timestamp(2_000)), "in 3s");
        assert_eq!(relative(Timestamp(2_000), Timestamp(5_000)), "3s ago");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "KIND"],
            &[
                vec!["1".into(), "email".into()],
                vec!["10".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID  KIND\n1   email\n10  x\n");
    }

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(one_line("a\nb  c", 10), "a b c");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
    }
}
