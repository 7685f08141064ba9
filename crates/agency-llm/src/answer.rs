//! The model's answer: strict JSON (`{"edits": [{"find", "replace"}], "explanation"}`, a code
//! fence around it tolerated, nothing else), then each `find` located exactly once inside the
//! allowed region of the file and turned into a byte-offset edit.

use std::ops::Range;

use serde::Deserialize;

use crate::Rejection;

/// One edit as the model wrote it: code to find and its replacement.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchoredEdit {
    pub find: String,
    pub replace: String,
}

/// The model's answer, parsed but not yet located in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub edits: Vec<AnchoredEdit>,
    pub explanation: String,
}

/// A replacement of a byte range of the file. Edits of one proposal are sorted and never
/// overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteEdit {
    pub range: Range<usize>,
    pub replace: String,
}

/// Parses the answer strictly: one JSON object with exactly `edits` and `explanation`,
/// optionally inside one Markdown code fence (```` ```json ````). Prose around it is an error.
pub fn parse_answer(content: &str) -> Result<Answer, Rejection> {
    let text = content.trim();
    let json = match text.strip_prefix("```") {
        Some(rest) => {
            let (info, body) = rest.split_once('\n').ok_or_else(|| Rejection::NotJson {
                detail: "a code fence with nothing inside".to_string(),
            })?;
            if !matches!(info.trim(), "" | "json" | "JSON") {
                return Err(Rejection::NotJson {
                    detail: format!("a code fence of {:?}, not of JSON", info.trim()),
                });
            }
            body.trim_end()
                .strip_suffix("```")
                .ok_or_else(|| Rejection::NotJson {
                    detail: "the code fence is not closed at the end of the answer".to_string(),
                })?
        }
        None => text,
    };
    serde_json::from_str::<Answer>(json).map_err(|e| Rejection::NotJson {
        detail: e.to_string(),
    })
}

/// Locates every edit in `file_text`: its `find` must occur exactly once inside `region`
/// (overlapping occurrences count), and the edits must not overlap. Returns the edits sorted by
/// position. An answer without edits is rejected with the model's explanation.
pub fn resolve_edits(
    file_text: &str,
    region: &Range<usize>,
    answer: &Answer,
) -> Result<Vec<ByteEdit>, Rejection> {
    if answer.edits.is_empty() {
        return Err(Rejection::NoEdits {
            explanation: answer.explanation.clone(),
        });
    }
    let region_text = &file_text[region.clone()];
    let mut located: Vec<(usize, ByteEdit)> = Vec::with_capacity(answer.edits.len());
    for (idx, edit) in answer.edits.iter().enumerate() {
        let index = idx + 1;
        if edit.find.is_empty() {
            return Err(Rejection::EmptyFind { index });
        }
        let occurrences = occurrences(region_text, &edit.find);
        match occurrences.as_slice() {
            [start] => {
                let start = region.start + start;
                located.push((
                    index,
                    ByteEdit {
                        range: start..start + edit.find.len(),
                        replace: edit.replace.clone(),
                    },
                ));
            }
            [] if file_text.contains(&edit.find) => {
                return Err(Rejection::OutsideRegion {
                    index,
                    find: excerpt(&edit.find),
                });
            }
            [] => {
                return Err(Rejection::FindAbsent {
                    index,
                    find: excerpt(&edit.find),
                });
            }
            many => {
                return Err(Rejection::FindAmbiguous {
                    index,
                    count: many.len(),
                    find: excerpt(&edit.find),
                });
            }
        }
    }
    located.sort_by_key(|(_, e)| e.range.start);
    for pair in located.windows(2) {
        if pair[1].1.range.start < pair[0].1.range.end {
            let (a, b) = (pair[0].0.min(pair[1].0), pair[0].0.max(pair[1].0));
            return Err(Rejection::Overlap {
                first: a,
                second: b,
            });
        }
    }
    Ok(located.into_iter().map(|(_, e)| e).collect())
}

/// Applies sorted, non-overlapping edits (as [`resolve_edits`] returns them) to `text`.
pub fn apply_edits(text: &str, edits: &[ByteEdit]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for edit in edits {
        out.push_str(&text[last..edit.range.start]);
        out.push_str(&edit.replace);
        last = edit.range.end;
    }
    out.push_str(&text[last..]);
    out
}

/// Start offsets of every occurrence of `needle` in `haystack`, overlapping ones included.
fn occurrences(haystack: &str, needle: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = haystack[from..].find(needle) {
        found.push(from + pos);
        // Step one character, not one byte, to stay on a boundary.
        let step = haystack[from + pos..]
            .chars()
            .next()
            .map_or(1, char::len_utf8);
        from += pos + step;
        if from > haystack.len() {
            break;
        }
    }
    found
}

/// The first 120 characters of a `find`, for messages.
fn excerpt(find: &str) -> String {
    match find.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &find[..cut]),
        None => find.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(edits: &[(&str, &str)]) -> Answer {
        Answer {
            edits: edits
                .iter()
                .map(|(f, r)| AnchoredEdit {
                    find: (*f).to_string(),
                    replace: (*r).to_string(),
                })
                .collect(),
            explanation: "e".into(),
        }
    }

    #[test]
    fn strict_json_with_an_optional_fence() {
        let json = r#"{"edits": [{"find": "a", "replace": "b"}], "explanation": "x"}"#;
        assert_eq!(parse_answer(json).unwrap().edits.len(), 1);
        assert_eq!(
            parse_answer(&format!("```json\n{json}\n```\n")).unwrap(),
            parse_answer(json).unwrap()
        );
        assert!(parse_answer(&format!("```\n{json}\n```")).is_ok());
        for bad in [
            format!("Here is the fix:\n{json}"),
            format!("{json}\nHope this helps"),
            format!("```python\n{json}\n```"),
            format!("```json\n{json}"),
            r#"{"edits": [{"find": "a", "replace": "b", "line": 3}], "explanation": "x"}"#
                .to_string(),
            r#"{"edits": [{"find": "a"}], "explanation": "x"}"#.to_string(),
            r#"{"edits": []}"#.to_string(),
            String::new(),
        ] {
            assert!(
                matches!(parse_answer(&bad), Err(Rejection::NotJson { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn finds_are_located_once_inside_the_region() {
        let file = "x = 1\ndef f():\n    x = 1\n    y = 2\n    return x + y\n";
        let region = file.find("def f").unwrap()..file.len();
        let edits = resolve_edits(
            file,
            &region,
            &answer(&[("return x + y", "return x - y"), ("    y = 2\n", "")]),
        )
        .unwrap();
        assert_eq!(edits.len(), 2);
        assert!(edits[0].range.start < edits[1].range.start, "sorted");
        assert_eq!(
            apply_edits(file, &edits),
            "x = 1\ndef f():\n    x = 1\n    return x - y\n"
        );
        // `x = 1` occurs once in the region: the copy above the region does not make it
        // ambiguous, and the edit lands on the region's copy.
        let edits = resolve_edits(file, &region, &answer(&[("x = 1", "x = 3")])).unwrap();
        assert_eq!(edits[0].range.start, file.rfind("x = 1").unwrap());
    }

    #[test]
    fn bad_finds_are_rejected() {
        let file = "a = 1\ndef f():\n    b = 2\n    b = 2\n    c = 3\n";
        let region = file.find("def f").unwrap()..file.len();
        let check = |edits: &[(&str, &str)], expected: &Rejection| {
            assert_eq!(
                &resolve_edits(file, &region, &answer(edits)).unwrap_err(),
                expected
            );
        };
        check(
            &[("b = 2", "b = 3")],
            &Rejection::FindAmbiguous {
                index: 1,
                count: 2,
                find: "b = 2".into(),
            },
        );
        check(
            &[("c = 3", ""), ("a = 1", "a = 2")],
            &Rejection::OutsideRegion {
                index: 2,
                find: "a = 1".into(),
            },
        );
        check(
            &[("z = 9", "")],
            &Rejection::FindAbsent {
                index: 1,
                find: "z = 9".into(),
            },
        );
        check(&[("", "x")], &Rejection::EmptyFind { index: 1 });
        check(
            &[("c = 3", "c = 4"), ("    c", "    d")],
            &Rejection::Overlap {
                first: 1,
                second: 2,
            },
        );
        // A find that starts inside the region but spills out of it is outside.
        let region = file.find("def f").unwrap()..file.find("    c").unwrap();
        assert!(matches!(
            resolve_edits(file, &region, &answer(&[("b = 2\n    c = 3", "")])),
            Err(Rejection::OutsideRegion { .. })
        ));
        assert!(matches!(
            resolve_edits(file, &region, &Answer { edits: vec![], explanation: "cannot".into() }),
            Err(Rejection::NoEdits { explanation }) if explanation == "cannot"
        ));
    }

    proptest::proptest! {
        /// Located edits are sorted, disjoint, inside the region, and each covers exactly its
        /// `find`, which occurs once in the region.
        #[test]
        fn located_edits_keep_their_invariants(
            file in "[ab\n]{0,60}",
            bounds in (0usize..61, 0usize..61),
            finds in proptest::collection::vec((0usize..61, 1usize..6), 1..4),
        ) {
            let len = file.len();
            let (a, b) = (bounds.0.min(len), bounds.1.min(len));
            let region = a.min(b)..a.max(b);
            let edits: Vec<(String, String)> = finds
                .iter()
                .map(|&(start, n)| {
                    let start = start.min(len);
                    (file[start..(start + n).min(len)].to_string(), "X".to_string())
                })
                .collect();
            let answer = Answer {
                edits: edits
                    .iter()
                    .map(|(f, r)| AnchoredEdit { find: f.clone(), replace: r.clone() })
                    .collect(),
                explanation: String::new(),
            };
            if let Ok(located) = resolve_edits(&file, &region, &answer) {
                proptest::prop_assert_eq!(located.len(), edits.len());
                for pair in located.windows(2) {
                    proptest::prop_assert!(pair[0].range.end <= pair[1].range.start);
                }
                for edit in &located {
                    proptest::prop_assert!(region.start <= edit.range.start);
                    proptest::prop_assert!(edit.range.end <= region.end);
                    let found = &file[edit.range.clone()];
                    proptest::prop_assert_eq!(
                        occurrences(&file[region.clone()], found).len(),
                        1
                    );
                }
                let patched = apply_edits(&file, &located);
                let removed: usize = located.iter().map(|e| e.range.len()).sum();
                proptest::prop_assert_eq!(patched.len(), len - removed + located.len());
            }
        }
    }

    #[test]
    fn overlapping_occurrences_count() {
        assert_eq!(occurrences("aaa", "aa"), vec![0, 1]);
        assert_eq!(occurrences("héhé", "é"), vec![1, 4]);
        assert!(occurrences("abc", "d").is_empty());
    }
}
