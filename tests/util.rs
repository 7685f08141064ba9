//! Helpers shared by the end-to-end tests.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The data directory with the model and runtime library (installed by `scripts/test.sh`).
pub fn home() -> PathBuf {
    let home = std::env::var_os("AGENCY_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".agency-home"),
        PathBuf::from,
    );
    assert!(
        home.join("models/all-minilm-l6-v2-int8/model.onnx")
            .is_file(),
        "the model is missing under {}: run scripts/test.sh (or agency setup)",
        home.display()
    );
    home
}

/// The data directory of this test run: the installed model and tools of [`home`], with a
/// pattern store, approvals and healing state of its own, so that what one run learns never
/// changes the next one.
pub fn run_home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(private_home).path()
}

/// `agency` with this run's data directory and deterministic embedding.
pub fn agency() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agency"));
    cmd.env("AGENCY_HOME", run_home())
        .env("AGENCY_EMBED_THREADS", "1")
        .env_remove("AGENCY_LOG")
        .env_remove("AGENCY_PROGRESS");
    cmd
}

/// Runs and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the agency binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A JSON line of the export format, for a synthetic pattern number `i`.
pub fn record_line(i: usize) -> String {
    serde_json::json!({
        "version": 1,
        "id": format!("import-synthetic-{i}"),
        "category": "style",
        "rule": format!("X{i:04}"),
        "title": format!("synthetic pattern {i}"),
        "message": format!("synthetic message number {i} about attribute_{i}"),
        "applicability": "safe",
        "before": format!("?x.attribute_{i}"),
        "after": format!("?x.renamed_{i}"),
        "examples": [{"before": format!("y = a.attribute_{i}"), "after": format!("y = a.renamed_{i}"), "source": "import"}],
        "source": "import"
    })
    .to_string()
}

/// A running `agency serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub url: String,
}

impl Server {
    pub fn start(store: &Path) -> Self {
        let mut child = agency()
            .args(["serve", "--addr", "127.0.0.1:0", "--store"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agency serve starts");
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server says where it listens before exiting")
                .expect("utf-8 stderr");
            if let Some(rest) = line.split("http://").nth(1) {
                let addr = rest.split_whitespace().next().expect("an address");
                break addr.parse().expect("a socket address");
            }
        };
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            url: format!("http://{addr}"),
        }
    }

    /// One HTTP/1.1 request over a fresh TCP connection: (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        stream.write_all(req.as_bytes()).expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("receive");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, decode_chunked(&body))
    }

    /// SIGKILL, as `kill -9` does (`Child::kill` sends SIGKILL on Unix).
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undoes `Transfer-Encoding: chunked` when the body looks chunked.
fn decode_chunked(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 {
            return out;
        }
        if tail.len() < n {
            return body.to_string();
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
}

/// The service token (`agency serve --print-token`).
pub fn token() -> String {
    let (code, stdout, stderr) = run(agency().args(["serve", "--print-token"]));
    assert_eq!(code, 0, "{stderr}");
    stdout.trim().to_string()
}

/// A git repository in a temporary directory holding a copy of `fixture` (relative to the
/// workspace root), committed.
pub fn git_fixture(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(fixture),
        dir.path(),
    );
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "fixture"]);
    dir
}

/// Copies a directory tree (regular files only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs git in `dir` with a fixed identity; panics when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=agency",
            "-c",
            "user.email=agency@example.org",
        ])
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

/// A data directory of its own, sharing the installed assets.
pub fn private_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shared = home();
    for name in ["lib", "models", "venv"] {
        std::os::unix::fs::symlink(shared.join(name), dir.path().join(name)).unwrap();
    }
    std::fs::copy(shared.join("assets.json"), dir.path().join("assets.json")).unwrap();
    dir
}

pub fn agency_at(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agency"));
    cmd.env("AGENCY_HOME", home)
        .env("AGENCY_EMBED_THREADS", "1")
        .env_remove("AGENCY_LOG")
        .env_remove("AGENCY_PROGRESS");
    cmd
}

/// Every file under `dir` but `.git/`, with its bytes.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The tree without what a heal run adds on purpose: its audit trail and the scan cache.
pub fn user_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = tree(dir);
    files.retain(|p, _| !p.starts_with("logs/autonomous_healing") && !p.starts_with(".agency"));
    files
}
