//! Rendering helpers: JSON documents and plain tables on stdout, progress on stderr (only on a
//! terminal, so that scripts and CI logs stay clean).

use std::io::{self, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Prints one JSON document followed by a newline.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Prints text as is.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A progress message on stderr, shown only when stderr is a terminal.
pub fn progress_line(message: &str) {
    if io::stderr().is_terminal() {
        eprintln!("{message}");
    }
}

/// Whether `AGENCY_PROGRESS=plain` asked for one progress line per step on stderr.
pub fn plain_progress() -> bool {
    std::env::var_os("AGENCY_PROGRESS").is_some_and(|v| v == "plain")
}

/// A warning on stderr, always shown.
pub fn warn(message: &str) {
    eprintln!("agency: warning: {message}");
}

/// A progress bar on stderr; hidden off a terminal unless `AGENCY_PROGRESS=plain` asks for
/// one line per step (for scripts and tests that follow long work).
pub fn bar(len: usize, what: &str) -> ProgressBar {
    if std::env::var_os("AGENCY_PROGRESS").is_some_and(|v| v == "plain") {
        let bar = ProgressBar::with_draw_target(
            Some(len as u64),
            indicatif::ProgressDrawTarget::hidden(),
        );
        bar.set_message(what.to_string());
        return bar;
    }
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Renders rows as a left-aligned table with a header; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(n) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["id", "score", "title"],
            &[
                vec!["a".into(), "0.91".into(), "first".into()],
                vec!["longer-id".into(), "0.5".into(), "second".into()],
            ],
        );
        assert_eq!(
            t,
            "id         score  title\na          0.91   first\nlonger-id  0.5    second\n"
        );
    }
}
