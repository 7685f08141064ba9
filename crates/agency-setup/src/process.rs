//! Runs a subprocess with no stdin, captured stdout and stderr, and a deadline after which it is
//! killed, so that a hung pip never hangs `agency setup` and its output can go into an error.
//!
//! The child stays in agency's process group on purpose: a Ctrl-C at the terminal then stops pip
//! too, and killing a separate group would need `unsafe` (`kill(2)` on a negative pid), which the
//! workspace forbids.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How many trailing lines of a failed command's output go into its error.
pub const TAIL_LINES: usize = 20;

/// What a finished subprocess left behind.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The last `n_lines` lines of stdout followed by stderr, where pip writes its errors last.
    pub fn tail(&self, n_lines: usize) -> String {
        let mut combined = self.stdout.trim_end().to_owned();
        if !self.stderr.trim().is_empty() {
            if !combined.is_empty() {
                combined.push('\n');
            }
            combined.push_str(self.stderr.trim_end());
        }
        tail(&combined, n_lines)
    }

    /// `self` when the command succeeded, otherwise [`Error::Command`] with `remedy` and the tail
    /// of the output.
    pub fn require_success(self, remedy: impl FnOnce() -> String) -> Result<Self> {
        if self.status.success() {
            return Ok(self);
        }
        Err(Error::Command {
            tail: self.tail(TAIL_LINES),
            command: self.command,
            status: self.status.to_string(),
            remedy: remedy(),
        })
    }
}

/// The last `n_lines` lines of `text`.
pub fn tail(text: &str, n_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n_lines)..].join("\n")
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs `cmd` to completion, or kills it once `timeout` has passed.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: PathBuf::from(cmd.get_program()),
            source,
        })?;

    // Each pipe is drained on its own thread so that neither can fill up and stall the child;
    // both reaching end of file is how we learn the child is done without polling.
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = drain(
        child.stdout.take().expect("stdout is piped"),
        done_tx.clone(),
    );
    let stderr = drain(child.stderr.take().expect("stderr is piped"), done_tx);
    let deadline = Instant::now() + timeout;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(left) {
            // Killing fails only when the child has already exited, which is fine here; the
            // reader threads end when the pipes close and are not waited for.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout {
                command,
                timeout_s: timeout.as_secs(),
            });
        }
    }
    let status = child.wait().map_err(|source| Error::Spawn {
        program: PathBuf::from(cmd.get_program()),
        source,
    })?;
    let stdout = stdout.join().expect("pipe reader does not panic");
    let stderr = stderr.join().expect("pipe reader does not panic");
    tracing::debug!(%command, %status, "finished");
    Ok(Output {
        command,
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Reads `pipe` to its end on a new thread, then signals `done`.
fn drain<R: Read + Send + 'static>(
    mut pipe: R,
    done: mpsc::Sender<()>,
) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error only cuts the captured output short; the exit status still decides.
        let _ = pipe.read_to_end(&mut bytes);
        // The receiver is gone only after a timeout, when nobody needs the signal.
        let _ = done.send(());
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn captures_both_streams_and_the_status() {
        let out = run(
            &mut sh("echo out; echo err >&2; exit 3"),
            Duration::from_mins(1),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.command, "sh -c echo out; echo err >&2; exit 3");
    }

    #[test]
    fn failure_carries_the_tail_and_the_remedy() {
        let out = run(
            &mut sh("seq 1 30; echo boom >&2; exit 1"),
            Duration::from_mins(1),
        )
        .unwrap();
        let err = out
            .require_success(|| "do the thing".to_owned())
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("do the thing"), "{message}");
        assert!(message.ends_with("\n29\n30\nboom"), "{message}");
        assert!(!message.contains("\n10\n"), "{message}");
    }

    #[test]
    fn stdin_is_not_inherited() {
        let out = run(&mut sh("cat; echo end"), Duration::from_mins(1)).unwrap();
        assert_eq!(out.stdout, "end\n");
    }

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let err = run(&mut sh("exec sleep 600"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = run(
            &mut Command::new("/nonexistent/agency-python"),
            Duration::from_mins(1),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/agency-python"),
            "{err}"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
