//! Following a growing log (`agency heal --watch-log`): a [`LogFollower`] reads what was
//! appended to a log file since its last [`LogFollower::poll`] and returns the Python
//! tracebacks completed in it, each once and whole, with its text and its [`Signature`].
//!
//! - **Where it starts.** At the end of the file (only tracebacks written from then on), or at
//!   its start with [`FollowOptions::from_start`]. A rotated-in file is read from its start.
//! - **Complete lines only.** Bytes are cut into lines at `\n`. A line whose newline has not
//!   been written yet (the writer flushed mid-line) waits for it however long that takes, so a
//!   traceback written in several chunks is never read in pieces.
//! - **When a traceback is complete.** Its lines are recognised as `traceback::parse_log` reads
//!   them (the header, frames, code and caret lines, then the exception line). It is complete
//!   once its exception line has ended and is followed by a line that is not part of it: the
//!   first non-blank line after it (`The above exception was the direct cause ...` marks it as
//!   chained), or when nothing was written to the file for [`FollowOptions::idle`] (1 s by
//!   default: Python prints a traceback in one go, so a pause after the exception line means it
//!   is over). Until then it is kept. A traceback whose exception line was not written is
//!   never returned.
//! - **Rotation.** Every poll compares the file at the path with the open one (device and
//!   inode). Another file there (rename and recreate: logrotate's default, Python's
//!   `RotatingFileHandler`) is read from its start; the old one stays open and is read until it
//!   has been quiet for [`ROTATED_GRACE`], since a program that has not reopened its log yet
//!   still writes there. A file shorter than the offset read (`copytruncate`) is read again
//!   from its start. A complete traceback of the old content is returned, one cut by the
//!   truncation is dropped. A truncation followed by more writes than the old offset before the
//!   next poll looks like growth and is missed, as with `tail -F`.
//! - **Missing file.** At open: an error naming the file and what to do. Later (rotated away,
//!   deleted): the open file is still read and the path is watched until a file is back.
//! - **Any bytes.** Text that is not UTF-8 is replaced (lossy); NUL runs and binary garbage are
//!   lines like any other. A line over [`MAX_LINE`] bytes is skipped and a traceback over
//!   [`MAX_TRACEBACK_LINES`] lines dropped, so memory stays bounded whatever the file holds.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::traceback::{self, Traceback};

/// How long a traceback whose exception line was written waits for a following line before
/// it counts as complete.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(1);

/// How long a rotated-away file is still read after its last write (or the rotation).
pub const ROTATED_GRACE: Duration = Duration::from_secs(5);

/// The longest line kept, in bytes; a longer one (binary garbage) is skipped.
pub const MAX_LINE: usize = 1 << 20;

/// The most lines of one traceback (Python folds deep recursion into `[Previous line repeated
/// N more times]`, so real ones stay far below).
pub const MAX_TRACEBACK_LINES: usize = 20_000;

/// Bytes read from one file in one poll; the rest waits for the next poll.
const MAX_READ_PER_POLL: usize = 16 << 20;

/// Blank lines after an exception line that may still precede a chained-exception line.
const MAX_BLANKS: usize = 2;

// The markers `traceback::parse_log` reads.
const HEADER: &str = "Traceback (most recent call last):";
const CAUSE: &str = "The above exception was the direct cause of the following exception:";
const CONTEXT: &str = "During handling of the above exception, another exception occurred:";

/// Why a log cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(
        "cannot follow the log {}: no such file; check the path, or create the file (`touch {}`) and start again",
        path.display(),
        path.display()
    )]
    Missing { path: PathBuf },
    #[error(
        "cannot follow the log {}: not a regular file (a directory, pipe or device); name the file the program writes its log to",
        path.display()
    )]
    NotAFile { path: PathBuf },
    #[error("cannot open the log {}: check that it is readable by this user", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the log {}: check the file and its disk", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to follow a log.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// Read the tracebacks already in the file too (default: only new ones).
    pub from_start: bool,
    /// See [`DEFAULT_IDLE`].
    pub idle: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            from_start: false,
            idle: DEFAULT_IDLE,
        }
    }
}

/// What makes two tracebacks the same crash: the exception type and the innermost frame's
/// file name, function and code line. Line numbers (they move with any edit above) and the
/// message (it carries ids and values) are left out, and so is the directory, so the same
/// program logging from another checkout or container is the same crash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    /// As printed, `sqlite3.OperationalError` included.
    pub exception: String,
    /// The innermost frame's file name, without its directory; empty without frames.
    pub file: String,
    pub function: String,
    /// The innermost frame's code line, trimmed, when Python printed it.
    pub code: Option<String>,
}

impl Signature {
    /// The signature of a traceback.
    pub fn of(traceback: &Traceback) -> Self {
        let frame = traceback.frames.last();
        Signature {
            exception: traceback.exception.clone(),
            file: frame.map_or_else(String::new, |f| file_name(&f.path).to_string()),
            function: frame.map_or_else(String::new, |f| f.function.clone()),
            code: frame.and_then(|f| f.code.clone()),
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.exception)?;
        if !self.function.is_empty() {
            write!(f, " in {}", self.function)?;
        }
        if !self.file.is_empty() {
            write!(f, " ({})", self.file)?;
        }
        Ok(())
    }
}

/// The last component of a path printed on any machine (`/` or `\`).
fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// One complete traceback read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    /// Parsed as `traceback::parse_log` parses it. `log_line` counts the lines of the file
    /// read since following began (the end of the file at open, or the start of a file rotated
    /// in or truncated), not from the start of the file.
    pub traceback: Traceback,
    /// Its lines as written (log prefixes included), from the header to the exception line,
    /// each ending with `\n`: `parse_log` of it gives the traceback again.
    pub text: String,
    pub signature: Signature,
}

/// What happened to the file at the path, for the caller to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEvent {
    /// Another file is at the path now: it is read from its start.
    Rotated,
    /// The file became shorter than what was read: it is read again from its start.
    Truncated,
    /// No file at the path any more: the open one is still read, and the path watched.
    Missing,
    /// The same file is at the path again.
    Back,
}

/// The result of one poll.
#[derive(Debug, Default)]
pub struct Poll {
    /// Complete tracebacks, in the order they were written.
    pub tracebacks: Vec<Followed>,
    pub events: Vec<FollowEvent>,
}

/// A log file being followed.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    options: FollowOptions,
    current: Source,
    /// The file rotated away, read until it has been quiet for [`ROTATED_GRACE`].
    rotated: Option<Source>,
    missing: bool,
}

impl LogFollower {
    /// Opens the log at `path`; it must exist and be a regular file.
    pub fn open(path: &Path, options: FollowOptions) -> Result<Self, FollowError> {
        let now = Instant::now();
        let mut current = Source::open(path, now)?;
        if !options.from_start {
            current.skip_to_end(path)?;
        }
        Ok(LogFollower {
            path: path.to_path_buf(),
            options,
            current,
            rotated: None,
            missing: false,
        })
    }

    /// The path followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tracebacks completed since the last poll, and what happened to the file.
    pub fn poll(&mut self) -> Result<Poll, FollowError> {
        self.poll_at(Instant::now())
    }

    fn poll_at(&mut self, now: Instant) -> Result<Poll, FollowError> {
        let mut poll = Poll::default();
        let out = &mut poll.tracebacks;
        if let Some(old) = &mut self.rotated {
            // The old file is gone from the path: a read error there ends its grace early.
            let read = old.read(out, now);
            if read.is_err() || now.saturating_duration_since(old.last_data) >= ROTATED_GRACE {
                old.assembler.finish(out);
                self.rotated = None;
            } else if now.saturating_duration_since(old.last_data) >= self.options.idle {
                old.assembler.idle(out);
            }
        }
        self.read_current(out, now)?;
        match std::fs::metadata(&self.path) {
            Ok(meta) if id(&meta) != self.current.id => match Source::open(&self.path, now) {
                Ok(new) => {
                    // Whatever the old file held up to now was read above; it stays open for
                    // the writes of a program that has not reopened its log yet.
                    let mut old = std::mem::replace(&mut self.current, new);
                    old.last_data = now;
                    if let Some(mut older) = self.rotated.replace(old) {
                        older.assembler.finish(out);
                    }
                    self.missing = false;
                    poll.events.push(FollowEvent::Rotated);
                    self.read_current(out, now)?;
                }
                // Replaced again between the two looks: the next poll sees the new one.
                Err(FollowError::Missing { .. } | FollowError::NotAFile { .. }) => {}
                Err(e) => return Err(e),
            },
            Ok(meta) => {
                if self.missing {
                    self.missing = false;
                    poll.events.push(FollowEvent::Back);
                }
                if meta.len() < self.current.offset {
                    self.current.assembler.reset(out);
                    self.current
                        .file
                        .seek(SeekFrom::Start(0))
                        .map_err(|source| FollowError::Read {
                            path: self.path.clone(),
                            source,
                        })?;
                    self.current.offset = 0;
                    poll.events.push(FollowEvent::Truncated);
                    self.read_current(out, now)?;
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if !self.missing {
                    self.missing = true;
                    poll.events.push(FollowEvent::Missing);
                }
            }
            Err(source) => {
                return Err(FollowError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        if now.saturating_duration_since(self.current.last_data) >= self.options.idle {
            self.current.assembler.idle(out);
        }
        Ok(poll)
    }

    fn read_current(&mut self, out: &mut Vec<Followed>, now: Instant) -> Result<(), FollowError> {
        self.current
            .read(out, now)
            .map_err(|source| FollowError::Read {
                path: self.path.clone(),
                source,
            })
    }
}

/// (device, inode): what stays the same while a file is renamed, and differs for a new one.
fn id(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// One open file and the traceback being assembled from it.
#[derive(Debug)]
struct Source {
    file: File,
    id: (u64, u64),
    /// Bytes read so far (the file's position).
    offset: u64,
    assembler: Assembler,
    /// When bytes last came (or the file was opened).
    last_data: Instant,
}

/// A missing file is its own case (it may come back); anything else cannot be opened.
fn open_error(path: &Path, source: std::io::Error) -> FollowError {
    if source.kind() == ErrorKind::NotFound {
        FollowError::Missing {
            path: path.to_path_buf(),
        }
    } else {
        FollowError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Source {
    fn open(path: &Path, now: Instant) -> Result<Self, FollowError> {
        // Looked at before opening: opening a FIFO would block until a writer comes.
        let meta = std::fs::metadata(path).map_err(|source| open_error(path, source))?;
        if !meta.is_file() {
            return Err(FollowError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(|source| open_error(path, source))?;
        let meta = file.metadata().map_err(|source| FollowError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Source {
            file,
            id: id(&meta),
            offset: 0,
            assembler: Assembler::default(),
            last_data: now,
        })
    }

    /// Starts at the end of the file; a last line without its newline yet is not read as a
    /// line of its own when its end comes.
    fn skip_to_end(&mut self, path: &Path) -> Result<(), FollowError> {
        let wrap = |source| FollowError::Read {
            path: path.to_path_buf(),
            source,
        };
        let end = self.file.seek(SeekFrom::End(0)).map_err(wrap)?;
        if end > 0 {
            self.file.seek(SeekFrom::Start(end - 1)).map_err(wrap)?;
            let mut last = [0u8; 1];
            self.file.read_exact(&mut last).map_err(wrap)?;
            self.assembler.skipping = last[0] != b'\n';
        }
        self.offset = end;
        Ok(())
    }

    /// Reads what was appended (up to [`MAX_READ_PER_POLL`]) into the assembler.
    fn read(&mut self, out: &mut Vec<Followed>, now: Instant) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < MAX_READ_PER_POLL {
            let n = match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.assembler.feed(&buf[..n], out);
            total += n;
            self.offset += n as u64;
        }
        if total > 0 {
            self.last_data = now;
            tracing::debug!(bytes = total, offset = self.offset, "read from the log");
        }
        Ok(())
    }
}

/// Cuts bytes into lines and lines into tracebacks (no IO: fed by [`Source`]).
#[derive(Debug, Default)]
struct Assembler {
    /// The bytes of a line whose newline has not come yet.
    partial: Vec<u8>,
    /// Inside a line over [`MAX_LINE`] bytes, or a line whose start was not read: dropped up
    /// to its newline.
    skipping: bool,
    state: State,
    /// Complete lines seen.
    lines: usize,
}

#[derive(Debug, Default)]
enum State {
    /// Between tracebacks: waiting for a header.
    #[default]
    Outside,
    /// Header and frames read; the exception line has not come yet.
    Frames(Pending),
    /// The exception line came; waiting for a line that is not part of it (after up to
    /// `blanks` blank lines) or for the writer to be idle.
    Ended { pending: Pending, blanks: usize },
}

#[derive(Debug)]
struct Pending {
    /// What the header line has before `Traceback`: a logger's prefix, carried by each line.
    prefix: String,
    lines: Vec<String>,
    /// 1-based line of the header.
    start: usize,
}

impl Assembler {
    fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Followed>) {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            let (head, tail) = (&bytes[..pos], &bytes[pos + 1..]);
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
                // Not part of any traceback: it ends one in progress.
                self.line("\u{fffd}".to_string(), out);
            } else {
                self.partial.extend_from_slice(head);
                let raw = std::mem::take(&mut self.partial);
                let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
                self.line(String::from_utf8_lossy(raw).into_owned(), out);
            }
            bytes = tail;
        }
        if !self.skipping {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
            }
        }
    }

    fn line(&mut self, text: String, out: &mut Vec<Followed>) {
        self.lines += 1;
        let number = self.lines;
        match std::mem::take(&mut self.state) {
            State::Outside => self.outside(text, number),
            State::Frames(mut pending) => {
                if is_body(strip(&pending.prefix, &text)) {
                    pending.lines.push(text);
                    if pending.lines.len() <= MAX_TRACEBACK_LINES {
                        self.state = State::Frames(pending);
                    } else {
                        tracing::warn!(
                            start = pending.start,
                            "a traceback of more than {MAX_TRACEBACK_LINES} lines was dropped"
                        );
                    }
                } else if text.contains(HEADER) {
                    // Cut short by another traceback: it has no exception line.
                    self.outside(text, number);
                } else {
                    pending.lines.push(text);
                    self.state = State::Ended { pending, blanks: 0 };
                }
            }
            State::Ended { pending, blanks } => {
                let body = strip(&pending.prefix, &text).trim();
                if body.is_empty() && blanks < MAX_BLANKS {
                    self.state = State::Ended {
                        pending,
                        blanks: blanks + 1,
                    };
                } else {
                    let chained = body.contains(CAUSE) || body.contains(CONTEXT);
                    emit(&pending, chained, out);
                    self.outside(text, number);
                }
            }
        }
    }

    fn outside(&mut self, text: String, number: usize) {
        if let Some(pos) = text.find(HEADER) {
            self.state = State::Frames(Pending {
                prefix: text[..pos].to_string(),
                lines: vec![text],
                start: number,
            });
        }
    }

    /// The writer was idle: a traceback whose exception line came is complete.
    fn idle(&mut self, out: &mut Vec<Followed>) {
        if let State::Ended { .. } = self.state
            && let State::Ended { pending, .. } = std::mem::take(&mut self.state)
        {
            emit(&pending, false, out);
        }
    }

    /// The file was truncated: what was complete is returned, the rest dropped.
    fn reset(&mut self, out: &mut Vec<Followed>) {
        self.finish(out);
        *self = Assembler::default();
    }

    /// No more bytes will come: what was complete is returned.
    fn finish(&mut self, out: &mut Vec<Followed>) {
        self.idle(out);
        self.state = State::Outside;
    }
}

/// A line of a traceback's lines as `parse_log` reads them, after the prefix: a frame header,
/// an indented code or caret line, or a repetition marker. Anything else is the exception
/// line.
fn is_body(line: &str) -> bool {
    let trimmed = line.trim_start();
    (trimmed.starts_with("File \"") && trimmed.contains("\", line "))
        || line.starts_with("    ")
        || trimmed.starts_with("...")
        || trimmed.starts_with("[Previous line repeated")
}

/// A line without the traceback's prefix, as `parse_log` strips it.
fn strip<'a>(prefix: &str, line: &'a str) -> &'a str {
    if prefix.is_empty() {
        return line;
    }
    if let Some(rest) = line.strip_prefix(prefix) {
        return rest;
    }
    let trimmed = prefix.trim_end();
    if !trimmed.is_empty()
        && let Some(rest) = line.strip_prefix(trimmed)
    {
        return rest;
    }
    line
}

fn emit(pending: &Pending, chained: bool, out: &mut Vec<Followed>) {
    let mut text = pending.lines.join("\n");
    text.push('\n');
    // One traceback by construction; none when its last line is not an exception line.
    let Some(mut traceback) = traceback::parse_log(&text).into_iter().next() else {
        return;
    };
    traceback.chained = chained;
    traceback.log_line = pending.start;
    let signature = Signature::of(&traceback);
    out.push(Followed {
        traceback,
        text,
        signature,
    });
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const ORDERS: &str = "Traceback (most recent call last):\n  File \"/usr/lib/python3.12/site-packages/flask/app.py\", line 880, in full_dispatch_request\n    rv = self.dispatch_request()\n  File \"/app/shop/orders.py\", line 14, in owner_email\n    return customers.lookup(order[\"customer_id\"]).upper()\n           ~~~~~~~~~~~~~~~~^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\nAttributeError: 'NoneType' object has no attribute 'upper'\n";

    const REPORT: &str = "Traceback (most recent call last):\n  File \"/app/shop/report.py\", line 9, in render\n    for customer in customers:\nTypeError: 'NoneType' object is not iterable\n";

    /// A follower that never completes a traceback by idleness unless a test says so.
    fn patient() -> FollowOptions {
        FollowOptions {
            from_start: false,
            idle: Duration::from_hours(1),
        }
    }

    fn append(path: &Path, text: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text).unwrap();
    }

    fn exceptions(poll: &Poll) -> Vec<(String, String)> {
        poll.tracebacks
            .iter()
            .map(|f| (f.traceback.exception.clone(), f.traceback.message.clone()))
            .collect()
    }

    #[test]
    fn appended_tracebacks_are_returned_once_and_old_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, format!("INFO start\n{REPORT}INFO later\n").as_bytes());
        let mut follower = LogFollower::open(&log, patient()).unwrap();
        assert!(follower.poll().unwrap().tracebacks.is_empty());
        append(
            &log,
            format!("INFO request\n{ORDERS}INFO next request\n").as_bytes(),
        );
        let poll = follower.poll().unwrap();
        assert_eq!(poll.tracebacks.len(), 1);
        let got = &poll.tracebacks[0];
        assert_eq!(got.text, ORDERS);
        assert_eq!(got.traceback.exception, "AttributeError");
        assert_eq!(got.traceback.frames.len(), 2);
        assert_eq!(got.traceback.log_line, 2);
        assert_eq!(
            got.signature,
            Signature {
                exception: "AttributeError".into(),
                file: "orders.py".into(),
                function: "owner_email".into(),
                code: Some("return customers.lookup(order[\"customer_id\"]).upper()".into()),
            }
        );
        assert!(poll.events.is_empty());
        assert!(follower.poll().unwrap().tracebacks.is_empty());
        // From the start, the old one is read too.
        let mut all = LogFollower::open(
            &log,
            FollowOptions {
                from_start: true,
                ..patient()
            },
        )
        .unwrap();
        assert_eq!(all.poll().unwrap().tracebacks.len(), 2);
    }

    #[test]
    fn a_traceback_written_in_chunks_is_returned_once_whole_wherever_it_is_cut() {
        let text = format!("{ORDERS}INFO next\n");
        let dir = tempfile::tempdir().unwrap();
        for cut in 0..=text.len() {
            let log = dir.path().join(format!("app-{cut}.log"));
            append(&log, b"");
            let mut follower = LogFollower::open(&log, patient()).unwrap();
            append(&log, &text.as_bytes()[..cut]);
            let first = follower.poll().unwrap();
            append(&log, &text.as_bytes()[cut..]);
            let second = follower.poll().unwrap();
            let got: Vec<&str> = first
                .tracebacks
                .iter()
                .chain(&second.tracebacks)
                .map(|f| f.text.as_str())
                .collect();
            assert_eq!(got, [ORDERS], "cut at byte {cut}");
            // Nothing is returned before the line after the exception line has ended.
            if cut < text.len() {
                assert!(first.tracebacks.is_empty(), "cut at byte {cut}");
            }
        }
    }

    #[test]
    fn the_last_traceback_is_complete_after_the_writer_was_idle() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, b"");
        let mut follower = LogFollower::open(&log, patient()).unwrap();
        let start = Instant::now();
        // The exception line without its newline is not complete, idle or not.
        append(&log, &ORDERS.as_bytes()[..ORDERS.len() - 1]);
        assert!(follower.poll_at(start).unwrap().tracebacks.is_empty());
        let later = start + Duration::from_hours(2);
        assert!(follower.poll_at(later).unwrap().tracebacks.is_empty());
        append(&log, b"\n");
        let now = later + Duration::from_secs(1);
        assert!(follower.poll_at(now).unwrap().tracebacks.is_empty());
        let idle = follower
            .poll_at(now + Duration::from_hours(1))
            .unwrap()
            .tracebacks;
        assert_eq!(idle.len(), 1);
        assert_eq!(idle[0].text, ORDERS);
        // Blank lines do not complete it: a chained exception may follow them.
        append(&log, format!("{REPORT}\n\n").as_bytes());
        let now = now + Duration::from_secs(3601);
        assert!(follower.poll_at(now).unwrap().tracebacks.is_empty());
        let idle = follower
            .poll_at(now + Duration::from_hours(1))
            .unwrap()
            .tracebacks;
        assert_eq!(idle.len(), 1);
        assert!(!idle[0].traceback.chained);
    }

    #[test]
    fn chained_exceptions_and_log_prefixes_are_read_as_parse_log_reads_them() {
        // The same sample as traceback.rs's tests: a prefixed traceback, a chain, a plain one.
        let log_text = r#"2026-11-25 10:00:01,123 INFO  shop.web: GET /orders/7
2026-11-25 10:00:01,130 ERROR shop.web: Traceback (most recent call last):
2026-11-25 10:00:01,130 ERROR shop.web:   File "/usr/lib/python3.12/site-packages/flask/app.py", line 880, in full_dispatch_request
2026-11-25 10:00:01,130 ERROR shop.web:     rv = self.dispatch_request()
2026-11-25 10:00:01,130 ERROR shop.web:   File "/app/shop/util.py", line 21, in display_name
2026-11-25 10:00:01,130 ERROR shop.web:     return customer["name"].title()
2026-11-25 10:00:01,130 ERROR shop.web:            ~~~~~~~~^^^^^^^^
2026-11-25 10:00:01,130 ERROR shop.web: TypeError: 'NoneType' object is not subscriptable
2026-11-25 10:00:01,130 ERROR shop.web:
2026-11-25 10:00:01,130 ERROR shop.web: The above exception was the direct cause of the following exception:
2026-11-25 10:00:01,130 ERROR shop.web:
2026-11-25 10:00:01,130 ERROR shop.web: Traceback (most recent call last):
2026-11-25 10:00:01,130 ERROR shop.web:   File "/app/shop/web.py", line 40, in page
2026-11-25 10:00:01,130 ERROR shop.web:     raise RenderError(name) from exc
2026-11-25 10:00:01,130 ERROR shop.web: shop.web.RenderError: display_name
Traceback (most recent call last):
  File "C:\deploy\shop\orders.py", line 14, in owner_email
    return customers.lookup(order["customer_id"]).upper()
AttributeError: 'NoneType' object has no attribute 'upper'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/shop/report.py", line 9, in render
    for customer in customers:
TypeError: 'NoneType' object is not iterable
INFO done
"#;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, b"");
        let mut follower = LogFollower::open(&log, patient()).unwrap();
        append(&log, log_text.as_bytes());
        let poll = follower.poll().unwrap();
        let expected = traceback::parse_log(log_text);
        let got: Vec<&Traceback> = poll.tracebacks.iter().map(|f| &f.traceback).collect();
        assert_eq!(got, expected.iter().collect::<Vec<_>>());
        assert_eq!(
            poll.tracebacks
                .iter()
                .map(|f| f.traceback.chained)
                .collect::<Vec<_>>(),
            [true, false, true, false]
        );
        assert_eq!(poll.tracebacks[0].signature.file, "util.py");
        assert_eq!(
            poll.tracebacks[1].signature.exception,
            "shop.web.RenderError"
        );
        // A path printed on Windows names the same file.
        assert_eq!(poll.tracebacks[2].signature.file, "orders.py");
        // Each text is its own traceback again.
        for f in &poll.tracebacks {
            assert_eq!(
                traceback::parse_log(&f.text)
                    .into_iter()
                    .map(|t| (t.exception, t.frames))
                    .collect::<Vec<_>>(),
                [(f.traceback.exception.clone(), f.traceback.frames.clone())]
            );
        }
    }

    #[test]
    fn rename_rotation_reads_the_rest_of_the_old_file_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let old = dir.path().join("app.log.1");
        append(&log, b"INFO start\n");
        let mut follower = LogFollower::open(&log, patient()).unwrap();
        let (head, tail) = ORDERS.split_at(60);
        append(&log, head.as_bytes());
        assert!(follower.poll().unwrap().tracebacks.is_empty());
        // logrotate renames; the program still writes to the file it has open, then the new
        // file gets its own crash.
        std::fs::rename(&log, &old).unwrap();
        append(&log, format!("{REPORT}INFO reopened\n").as_bytes());
        append(&old, format!("{tail}INFO closing\n").as_bytes());
        let poll = follower.poll().unwrap();
        assert_eq!(poll.events, [FollowEvent::Rotated]);
        let mut got = exceptions(&poll);
        got.sort();
        assert_eq!(
            got,
            [
                (
                    "AttributeError".to_string(),
                    "'NoneType' object has no attribute 'upper'".to_string()
                ),
                (
                    "TypeError".to_string(),
                    "'NoneType' object is not iterable".to_string()
                )
            ]
        );
        // Later writes to the new file keep coming; the old one is let go after its grace.
        append(&log, format!("{REPORT}INFO again\n").as_bytes());
        let poll = follower.poll().unwrap();
        assert_eq!(poll.tracebacks.len(), 1);
        assert!(poll.events.is_empty());
        let _ = follower
            .poll_at(Instant::now() + ROTATED_GRACE * 2)
            .unwrap();
        assert!(follower.rotated.is_none());
    }

    #[test]
    fn copytruncate_rotation_reads_the_file_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, b"");
        let mut follower = LogFollower::open(&log, patient()).unwrap();
        append(&log, format!("{ORDERS}INFO one\n").as_bytes());
        assert_eq!(follower.poll().unwrap().tracebacks.len(), 1);
        // A traceback cut by the truncation is dropped, never glued to what comes after.
        append(&log, &REPORT.as_bytes()[..50]);
        assert!(follower.poll().unwrap().tracebacks.is_empty());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, format!("{REPORT}INFO two\n").as_bytes());
        let poll = follower.poll().unwrap();
        assert_eq!(poll.events, [FollowEvent::Truncated]);
        assert_eq!(
            exceptions(&poll),
            [(
                "TypeError".to_string(),
                "'NoneType' object is not iterable".to_string()
            )]
        );
        assert_eq!(poll.tracebacks[0].traceback.log_line, 1);
    }

    #[test]
    fn a_missing_log_is_an_error_at_open_and_waited_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let err = LogFollower::open(&log, patient()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&log.display().to_string()), "{message}");
        assert!(message.contains("no such file"), "{message}");
        assert!(message.contains("touch"), "{message}");
        let err = LogFollower::open(dir.path(), patient()).unwrap_err();
        assert!(matches!(err, FollowError::NotAFile { .. }), "{err}");

        append(&log, b"");
        let mut follower = LogFollower::open(&log, patient()).unwrap();
        std::fs::remove_file(&log).unwrap();
        assert_eq!(follower.poll().unwrap().events, [FollowEvent::Missing]);
        assert!(follower.poll().unwrap().events.is_empty());
        append(&log, format!("{ORDERS}INFO back\n").as_bytes());
        let poll = follower.poll().unwrap();
        assert_eq!(poll.events, [FollowEvent::Rotated]);
        assert_eq!(poll.tracebacks.len(), 1);
        // Renamed away and back: the same file.
        let aside = dir.path().join("aside.log");
        std::fs::rename(&log, &aside).unwrap();
        assert_eq!(follower.poll().unwrap().events, [FollowEvent::Missing]);
        std::fs::rename(&aside, &log).unwrap();
        assert_eq!(follower.poll().unwrap().events, [FollowEvent::Back]);
    }

    #[test]
    fn garbage_and_invalid_utf8_are_read_lossily() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        // The file ends mid-line at open: the rest of that line is not a line of its own.
        append(&log, b"INFO half a line: Traceback (most rec");
        let mut follower = LogFollower::open(&log, patient()).unwrap();
        let mut bytes = b"ent call last):\n\xff\xfe\x00\x00garbage\x80\n".to_vec();
        bytes.extend(std::iter::repeat_n(0u8, MAX_LINE + 10));
        bytes.extend_from_slice(b"\n");
        bytes.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        bytes.extend_from_slice(b"Traceback (most recent call last):\n");
        // Invalid UTF-8 inside a traceback: replaced, still parsed.
        bytes.extend_from_slice(
            b"Traceback (most recent call last):\n  File \"/app/shop/caf\xe9.py\", line 3, in f\n    x = y[\"k\"]\nKeyError: '\xff'\nINFO ok\n",
        );
        append(&log, &bytes);
        let poll = follower.poll().unwrap();
        assert_eq!(poll.tracebacks.len(), 1, "{:?}", exceptions(&poll));
        let got = &poll.tracebacks[0];
        assert_eq!(got.traceback.exception, "KeyError");
        assert_eq!(got.signature.file, "caf\u{fffd}.py");
        assert_eq!(got.traceback.message, "'\u{fffd}'");
        assert!(follower.current.assembler.partial.is_empty());
    }

    #[test]
    fn the_signature_ignores_line_numbers_messages_and_directories() {
        let sig = |text: &str| Signature::of(&traceback::parse_log(text)[0]);
        let base = sig(ORDERS);
        let moved = ORDERS
            .replace("line 14", "line 30")
            .replace("/app/shop", "/srv/other")
            .replace("'upper'", "'lower'");
        assert_eq!(sig(&moved), base);
        assert_ne!(sig(&ORDERS.replace("owner_email", "owner_name")), base);
        assert_ne!(sig(&ORDERS.replace(".upper()", ".title()")), base);
        assert_ne!(sig(&ORDERS.replace("AttributeError", "TypeError")), base);
        assert_eq!(
            base.to_string(),
            "AttributeError in owner_email (orders.py)"
        );
    }
}
