//! The pattern service through the real binary on an ephemeral loopback port: a plain HTTP/1.1
//! client over TCP (no client library between the test and the wire), auth, and crash safety.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};

use crate::util::{agency, run};

/// A running `agency serve`, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(store: &str) -> Self {
        let mut child = agency()
            .args(["serve", "--addr", "127.0.0.1:0", "--store", store])
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
        Self { child, addr }
    }

    fn request(
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

    fn kill9(mut self) {
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

fn token() -> String {
    let (code, stdout, stderr) = run(agency().args(["serve", "--print-token"]));
    assert_eq!(code, 0, "{stderr}");
    stdout.trim().to_string()
}

#[test]
fn endpoints_auth_and_errors_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s").display().to_string());
    let token = token();
    let id = "style-e711-comparison-to-none";

    let (status, body) = server.request("GET", "/health", None, None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.request(
        "POST",
        "/v1/patterns/query",
        None,
        Some(r#"{"text": "AttributeError: 'NoneType' object has no attribute 'group'", "k": 3}"#),
    );
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["matches"][0]["category"], "runtime", "{body}");

    let outcome = format!(r#"{{"pattern_id": "{id}", "success": true, "idempotency_key": "k1"}}"#);
    let (status, body) = server.request("POST", "/v1/outcomes", None, Some(&outcome));
    assert_eq!(status, 401, "{body}");
    let (status, _) = server.request("POST", "/v1/outcomes", Some("wrong"), Some(&outcome));
    assert_eq!(status, 401);
    for _ in 0..2 {
        let (status, body) = server.request("POST", "/v1/outcomes", Some(&token), Some(&outcome));
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server.request("GET", &format!("/v1/patterns/{id}"), None, None);
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["successes"], 1, "the repeated outcome counts once");

    let cases: [(&str, &str, Option<&str>, u16); 4] = [
        ("POST", "/v1/outcomes", Some("{not json"), 400),
        (
            "POST",
            "/v1/outcomes",
            Some(r#"{"pattern_id": 5, "success": "yes"}"#),
            422,
        ),
        (
            "POST",
            "/v1/outcomes",
            Some(r#"{"pattern_id": "nope", "success": true}"#),
            404,
        ),
        ("GET", "/v1/patterns/nope", None, 404),
    ];
    for (method, path, body, expected) in cases {
        let (status, text) = server.request(method, path, Some(&token), body);
        assert_eq!(status, expected, "{method} {path}: {text}");
        let err: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(err["error"]["code"].is_string(), "{text}");
    }
    let huge = format!(r#"{{"text": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, _) = server.request("POST", "/v1/patterns/query", None, Some(&huge));
    assert_eq!(status, 413);
    // The server is still up after all of that.
    assert_eq!(server.request("GET", "/health", None, None).0, 200);
}

#[test]
fn kill_9_keeps_every_acknowledged_outcome_and_confidence_replays() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s").display().to_string();
    let token = token();
    let id = "style-e711-comparison-to-none";
    let server = Server::start(&store);
    let mut acked = 0_u32;
    for i in 0..40 {
        let body =
            format!(r#"{{"pattern_id": "{id}", "success": true, "idempotency_key": "burst-{i}"}}"#);
        let (status, text) = server.request("POST", "/v1/outcomes", Some(&token), Some(&body));
        assert_eq!(status, 200, "{text}");
        acked += 1;
    }
    server.kill9();

    let server = Server::start(&store);
    let (status, body) = server.request("GET", &format!("/v1/patterns/{id}"), None, None);
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["successes"], acked);
    // Replay: the seed's prior is 5 successes, 0 failures; the outcomes are seconds old, so
    // decay is negligible: (1 + 5 + n) / (2 + 5 + n).
    let n = f64::from(acked);
    let expected = (6.0 + n) / (7.0 + n);
    let confidence = view["confidence"].as_f64().unwrap();
    assert!(
        (confidence - expected).abs() < 1e-4,
        "{confidence} vs {expected}"
    );
}
