//! The pattern service through the real binary on an ephemeral loopback port: a plain HTTP/1.1
//! client over TCP (no client library between the test and the wire), auth, and crash safety.

use crate::util::{Server, token};

#[test]
fn endpoints_auth_and_errors_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s"));
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
    let store = dir.path().join("s");
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
