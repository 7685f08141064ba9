//! SARIF 2.1.0 output, as GitHub code scanning reads it: one run, a rule per reported code
//! with its help text, one result per finding with its location and our stable id as the
//! partial fingerprint (so an alert survives edits above it).

use std::collections::BTreeMap;

use agency_core::contract::{Finding, Priority, Severity};
use serde_json::{Value, json};

/// The SARIF document for a scan's findings.
pub fn render(findings: &[Finding], version: &str) -> Value {
    // Rules, in first-seen order of (tool, rule).
    let mut rules: BTreeMap<String, (usize, &Finding)> = BTreeMap::new();
    for finding in findings {
        let next = rules.len();
        rules.entry(rule_id(finding)).or_insert((next, finding));
    }
    let mut ordered: Vec<(&String, &(usize, &Finding))> = rules.iter().collect();
    ordered.sort_by_key(|(_, (index, _))| *index);
    let rule_docs: Vec<Value> = ordered
        .iter()
        .map(|(id, (_, finding))| rule(id, finding))
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let id = rule_id(f);
            let index = rules[&id].0;
            json!({
                "ruleId": id,
                "ruleIndex": index,
                "level": level(f),
                "message": {"text": f.message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": relative_uri(&f.file), "uriBaseId": "%SRCROOT%"},
                        "region": {
                            "startLine": f.line.max(1),
                            "startColumn": f.column.max(1),
                            "endLine": f.end_line.max(f.line).max(1),
                            "endColumn": if f.end_line > f.line { f.end_column.max(1) } else { f.end_column.max(f.column).max(1) },
                        }
                    }
                }],
                "partialFingerprints": {"agencyFindingId/v1": f.id},
                "properties": {
                    "priority": f.priority.as_str(),
                    "category": f.category,
                    "sources": f.sources.iter().map(|s| format!("{} {}", s.tool, s.rule)).collect::<Vec<_>>(),
                }
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "agency",
                "informationUri": "https://github.com/agency-heal/agency",
                "version": version,
                "rules": rule_docs,
            }},
            "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "the repository root"}}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

/// A repository-relative path as a relative URI reference: `/`-separated, with every byte that
/// may not appear in a URI path (spaces, `%`, `#`, `?`, non-ASCII, ...) percent-encoded, so
/// `my dir/données.py` becomes `my%20dir/donn%C3%A9es.py`. A leading `./` or `/` is dropped, as
/// the location is resolved against `%SRCROOT%`.
fn relative_uri(path: &str) -> String {
    let path = path.replace('\\', "/");
    let path = path.trim_start_matches("./").trim_start_matches('/');
    let mut uri = String::with_capacity(path.len());
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

/// Our own codes stand alone; other tools' codes are prefixed with the tool (`ruff/E501`), as
/// two tools may use one code for different things.
fn rule_id(f: &Finding) -> String {
    if f.tool == "agency" {
        f.rule.clone()
    } else {
        format!("{}/{}", f.tool, f.rule)
    }
}

fn level(f: &Finding) -> &'static str {
    match (f.priority, f.severity) {
        (Priority::P0 | Priority::P1, _) | (_, Severity::High) => "error",
        (Priority::P2, _) => "warning",
        (Priority::P3, _) => "note",
    }
}

/// The documentation page of one of agency's codes: its own page for `AGY...` rules, a section
/// of the rule index for the syntax error and the runtime rules.
fn rule_page(code: &str, category: agency_core::Category) -> String {
    const DOCS: &str = "https://github.com/agency-heal/agency/blob/main/docs/rules";
    if code.starts_with("AGY") {
        format!("{DOCS}/{code}.md")
    } else if category == agency_core::Category::Runtime {
        format!("{DOCS}/README.md#runtime-findings---from-log")
    } else {
        format!("{DOCS}/README.md#{code}")
    }
}

fn rule(id: &str, f: &Finding) -> Value {
    let (name, summary, help_uri) = match agency_core::codes::lookup(&f.rule) {
        Some(code) if f.tool == "agency" => (
            code.name.to_string(),
            code.summary.to_string(),
            rule_page(code.code, code.category),
        ),
        _ => {
            let uri = match f.tool.as_str() {
                "ruff" => "https://docs.astral.sh/ruff/rules/".to_string(),
                "mypy" => "https://mypy.readthedocs.io/en/stable/error_code_list.html".to_string(),
                "bandit" => {
                    "https://bandit.readthedocs.io/en/latest/plugins/index.html".to_string()
                }
                _ => rule_page(&f.rule, agency_core::Category::Type),
            };
            (f.rule.clone(), format!("{} {}", f.tool, f.rule), uri)
        }
    };
    let mut properties = json!({"tags": [f.category, f.priority.as_str()]});
    if f.category == "security" {
        // GitHub ranks security alerts by this score (0.0 to 10.0).
        let score = match f.severity {
            Severity::High => "8.0",
            Severity::Medium => "5.5",
            Severity::Low => "3.0",
        };
        properties["security-severity"] = json!(score);
    }
    json!({
        "id": id,
        "name": name,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": summary},
        "help": {
            "text": format!("{summary}. See {help_uri}"),
            "markdown": format!("{summary}. See [the documentation]({help_uri})."),
        },
        "helpUri": help_uri,
        "defaultConfiguration": {"level": level(f)},
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agency_core::contract::{FindingSource, FixAvailability};

    /// The official OASIS SARIF 2.1.0 schema (errata 01); see `fixtures/sarif/README.md`.
    const SCHEMA_PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/sarif/sarif-schema-2.1.0.json"
    );

    fn validator() -> jsonschema::Validator {
        let text = std::fs::read_to_string(SCHEMA_PATH).expect("read the SARIF schema fixture");
        let schema: Value = serde_json::from_str(&text).expect("the SARIF schema is JSON");
        assert_eq!(
            schema["id"],
            "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
        );
        assert_eq!(
            schema["title"],
            "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
        );
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the SARIF schema compiles")
    }

    fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
        validator
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        tool: &str,
        rule: &str,
        category: &str,
        priority: Priority,
        severity: Severity,
        file: &str,
        (line, column, end_line, end_column): (u32, u32, u32, u32),
        message: &str,
    ) -> Finding {
        Finding {
            id: format!("{tool}:{rule}:{file}:{:016x}", u64::from(line) * 7919),
            category: category.to_string(),
            rule: rule.to_string(),
            tool: tool.to_string(),
            priority,
            severity,
            file: file.to_string(),
            line,
            column,
            end_line,
            end_column,
            message: message.to_string(),
            fix: FixAvailability {
                available: false,
                approval_required: false,
            },
            sources: vec![FindingSource {
                tool: tool.to_string(),
                rule: rule.to_string(),
            }],
            snippet: String::new(),
            impact_pct: None,
        }
    }

    /// An agency security finding (also reported by bandit), a ruff style finding, a mypy type
    /// finding, a finding spanning lines, and edge cases: a second result for the same rule, a
    /// path needing percent-encoding, and a tool that gives no column.
    fn findings() -> Vec<Finding> {
        let mut sql = finding(
            "agency",
            "AGY201",
            "security",
            Priority::P0,
            Severity::High,
            "app/db.py",
            (42, 5, 42, 61),
            "SQL built with an f-string reaches cursor.execute()",
        );
        sql.sources.push(FindingSource {
            tool: "bandit".into(),
            rule: "B608".into(),
        });
        sql.fix = FixAvailability {
            available: true,
            approval_required: true,
        };
        vec![
            sql,
            finding(
                "ruff",
                "E501",
                "style",
                Priority::P3,
                Severity::Low,
                "app/views.py",
                (7, 89, 7, 104),
                "Line too long (103 > 88)",
            ),
            finding(
                "mypy",
                "arg-type",
                "type",
                Priority::P1,
                Severity::Medium,
                "app/services/billing.py",
                (18, 12, 18, 30),
                "Argument 1 to \"charge\" has incompatible type \"str\"; expected \"int\"",
            ),
            finding(
                "agency",
                "AGY203",
                "security",
                Priority::P1,
                Severity::Medium,
                "app/settings.py",
                (3, 1, 6, 2),
                "a credential is written in the source",
            ),
            finding(
                "ruff",
                "E501",
                "style",
                Priority::P3,
                Severity::Low,
                "scripts/my tools/données.py",
                (1, 89, 1, 120),
                "Line too long (119 > 88)",
            ),
            finding(
                "mypy",
                "import-untyped",
                "type",
                Priority::P2,
                Severity::Low,
                "app/__init__.py",
                (0, 0, 0, 0),
                "Library stubs not installed for \"requests\"",
            ),
        ]
    }

    #[test]
    fn sarif_validates_against_the_official_schema() {
        let validator = validator();
        let doc = render(&findings(), "1.2.3");
        let errors = errors(&validator, &doc);
        assert!(
            errors.is_empty(),
            "SARIF does not match the 2.1.0 schema:\n{}",
            errors.join("\n")
        );
        let empty = render(&[], "1.2.3");
        let errors = self::errors(&validator, &empty);
        assert!(errors.is_empty(), "empty scan: {}", errors.join("\n"));
    }

    #[test]
    fn sarif_schema_rejects_broken_documents() {
        let validator = validator();
        let good = render(&findings(), "1.2.3");
        assert!(validator.is_valid(&good));

        let mut no_runs = good.clone();
        no_runs.as_object_mut().unwrap().remove("runs");
        assert!(!validator.is_valid(&no_runs), "a log without runs");

        let mut string_line = good.clone();
        string_line["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
            json!("42");
        assert!(!validator.is_valid(&string_line), "a string startLine");

        let mut zero_line = good.clone();
        zero_line["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
            json!(0);
        assert!(!validator.is_valid(&zero_line), "startLine 0");

        let mut wrong_version = good.clone();
        wrong_version["version"] = json!("2.0.0");
        assert!(!validator.is_valid(&wrong_version), "version 2.0.0");

        let mut bad_level = good.clone();
        bad_level["runs"][0]["results"][0]["level"] = json!("critical");
        assert!(!validator.is_valid(&bad_level), "an unknown level");

        let mut no_message = good;
        no_message["runs"][0]["results"][0]
            .as_object_mut()
            .unwrap()
            .remove("message");
        assert!(!validator.is_valid(&no_message), "a result without message");
    }

    /// What GitHub code scanning needs beyond the schema: every result names a rule of the
    /// driver, rules carry help, results have a fingerprint and a repository-relative location
    /// whose region starts at line 1 or later.
    #[test]
    fn sarif_meets_github_code_scanning_requirements() {
        let findings = findings();
        let doc = render(&findings, "1.2.3");
        assert_eq!(doc["version"], "2.1.0");
        let runs = doc["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        let driver = &run["tool"]["driver"];
        assert_eq!(driver["name"], "agency");
        assert_eq!(driver["version"], "1.2.3");

        let rules = driver["rules"].as_array().unwrap();
        let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "AGY201",
                "ruff/E501",
                "mypy/arg-type",
                "AGY203",
                "mypy/import-untyped"
            ],
            "one rule per code, in first-seen order"
        );
        for rule in rules {
            let id = rule["id"].as_str().unwrap();
            let help = rule["help"]["text"].as_str().unwrap_or_default();
            assert!(!help.trim().is_empty(), "rule {id} has no help text");
            assert!(rule["help"]["markdown"].is_string(), "rule {id}");
            assert!(
                !rule["shortDescription"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "rule {id} has no short description"
            );
            assert!(
                rule["helpUri"].as_str().unwrap().starts_with("https://"),
                "rule {id}"
            );
        }
        let sql = &rules[0];
        assert_eq!(sql["name"], "sql-string-format");
        assert_eq!(sql["properties"]["security-severity"], "8.0");
        assert!(
            sql["help"]["text"]
                .as_str()
                .unwrap()
                .contains("docs/rules/AGY201.md")
        );
        assert!(rules[1]["properties"].get("security-severity").is_none());

        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), findings.len());
        for (result, finding) in results.iter().zip(&findings) {
            let rule_id = result["ruleId"].as_str().unwrap();
            let index = usize::try_from(result["ruleIndex"].as_u64().unwrap()).unwrap();
            assert_eq!(rules[index]["id"], rule_id, "ruleIndex points at ruleId");
            assert!(ids.contains(&rule_id));
            assert_eq!(result["message"]["text"], finding.message.as_str());

            let fingerprints = result["partialFingerprints"].as_object().unwrap();
            assert!(
                !fingerprints.is_empty(),
                "{rule_id}: no partialFingerprints"
            );
            assert_eq!(fingerprints["agencyFindingId/v1"], finding.id.as_str());

            let locations = result["locations"].as_array().unwrap();
            assert_eq!(locations.len(), 1);
            let physical = &locations[0]["physicalLocation"];
            let uri = physical["artifactLocation"]["uri"].as_str().unwrap();
            assert!(
                !uri.starts_with('/') && !uri.contains("://") && !uri.contains('\\'),
                "{uri} is not repository-relative"
            );
            assert_eq!(physical["artifactLocation"]["uriBaseId"], "%SRCROOT%");
            let region = &physical["region"];
            let start = region["startLine"].as_u64().unwrap();
            let end = region["endLine"].as_u64().unwrap();
            assert!(start >= 1, "{rule_id}: startLine {start}");
            assert!(end >= start, "{rule_id}: endLine {end} < startLine {start}");
            assert!(region["startColumn"].as_u64().unwrap() >= 1);
            if start == end {
                assert!(region["endColumn"].as_u64() >= region["startColumn"].as_u64());
            }
        }

        // The security finding keeps its position and lists every tool that reported it.
        let region = &results[0]["locations"][0]["physicalLocation"]["region"];
        assert_eq!(region["startLine"], 42);
        assert_eq!(region["startColumn"], 5);
        assert_eq!(results[0]["level"], "error");
        assert_eq!(
            results[0]["properties"]["sources"],
            json!(["agency AGY201", "bandit B608"])
        );
        // The finding spanning lines 3 to 6.
        let region = &results[3]["locations"][0]["physicalLocation"]["region"];
        assert_eq!(
            (
                &region["startLine"],
                &region["endLine"],
                &region["endColumn"]
            ),
            (&json!(3), &json!(6), &json!(2))
        );
        assert_eq!(results[1]["level"], "note");
        assert_eq!(results[2]["level"], "error");
        assert_eq!(results[5]["level"], "warning");
    }

    #[test]
    fn sarif_uris_are_percent_encoded_relative_references() {
        assert_eq!(relative_uri("app/db.py"), "app/db.py");
        assert_eq!(
            relative_uri("scripts/my tools/données.py"),
            "scripts/my%20tools/donn%C3%A9es.py"
        );
        assert_eq!(relative_uri("./a/b#c?.py"), "a/b%23c%3F.py");
        assert_eq!(relative_uri("a\\b:c%.py"), "a/b%3Ac%25.py");
        assert_eq!(relative_uri("/abs/path.py"), "abs/path.py");
    }
}
