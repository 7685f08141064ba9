//! Properties: no input makes compile, parse, apply or extract panic; applied edits leave the
//! bytes outside them alone, re-parse and are idempotent; an extracted rewrite reproduces its
//! example.

use agency_core::pattern::Rewrite;
use agency_learn::{Site, apply, apply_checked, compile, extract, parse_source};
use proptest::prelude::*;

/// Small Python-ish fragments, with holes, strings, comments and odd spacing.
fn fragment() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "?x", "?y", "?args", "x", "y.z", " == ", " is ", "None", "True", "(", ")", "[", "]", ", ",
        "f\"?s\"", "\"a\"", "# c", "\n", "\n    ", ":", "if ", "for ", " in ", "def ", "return ",
        "=", " + ", "1", "lambda ", "?", "'", "\\",
    ]);
    prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

/// Programs with `== None` comparisons in code, strings and comments.
fn program() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "a = b == None\n",
        "if (x  # why\n    ) == None:\n    pass\n",
        "s = \"x == None\"\n",
        "# y == None\n",
        "def f(v):\n    return v.attr == None  # keep\n",
        "q = [i for i in r if i == None]\n",
        "\tt = 1\n",
        "n = (a or b) == None\n",
    ]);
    prop::collection::vec(line, 1..8).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn compile_never_panics(before in fragment(), after in fragment()) {
        let _ = compile(&Rewrite { before, after });
    }

    #[test]
    fn parse_and_extract_never_panic(before in fragment(), after in fragment(), line in 0u32..6) {
        let _ = parse_source(&before);
        let _ = extract("E711", &before, &after, line);
    }

    #[test]
    fn applied_edits_are_local_parse_and_are_idempotent(source in program(), column in prop::option::of(1u32..30)) {
        let rewrite = compile(&Rewrite { before: "?x == None".into(), after: "?x is None".into() })
            .expect("compiles");
        let Ok(parsed) = parse_source(&source) else { return Ok(()); };
        for line in 1..=u32::try_from(source.lines().count()).expect("small") {
            let site = Site { line, column };
            let Some(fix) = apply(&rewrite, &parsed, site).expect("valid site") else { continue };
            let fixed = apply_checked(&rewrite, &source, &fix).expect("parses and is idempotent");
            // Bytes outside the edits are unchanged.
            let mut at: usize = 0;
            let mut shift: isize = 0;
            for edit in &fix.edits {
                let start = at.checked_add_signed(shift).expect("in range");
                prop_assert_eq!(&source[at..edit.start], &fixed[start..start + edit.start - at]);
                shift += edit.content.len() as isize - (edit.end - edit.start) as isize;
                at = edit.end;
            }
            let start = at.checked_add_signed(shift).expect("in range");
            prop_assert_eq!(&source[at..], &fixed[start..]);
            // Strings and comments are never touched.
            prop_assert_eq!(source.matches("\"x == None\"").count(), fixed.matches("\"x == None\"").count());
            prop_assert_eq!(source.matches("# y == None").count(), fixed.matches("# y == None").count());
            prop_assert!(fixed.matches("# keep").count() == source.matches("# keep").count());
        }
    }

    #[test]
    fn extracted_rewrites_reproduce_their_example(source in program(), pick in 0usize..8) {
        // A verified fix: one `== None` in code becomes `is None`.
        let Ok(parsed) = parse_source(&source) else { return Ok(()); };
        let rewrite = compile(&Rewrite { before: "?x == None".into(), after: "?x is None".into() })
            .expect("compiles");
        let n_lines = u32::try_from(source.lines().count()).expect("small");
        let fixes: Vec<_> = (1..=n_lines)
            .filter_map(|line| apply(&rewrite, &parsed, Site::line(line)).expect("valid").map(|f| (line, f)))
            .collect();
        let Some((line, fix)) = fixes.get(pick % fixes.len().max(1)) else { return Ok(()); };
        let after = fix.apply_to(&source).expect("fits");
        let extracted = extract("E711", &source, &after, *line).expect("extracts");
        extracted.rewrite.validate().expect("valid rewrite");
        let learned = compile(&extracted.rewrite).expect("compiles");
        let fixed = apply(&learned, &parsed, Site::line(*line))
            .expect("valid")
            .map(|f| f.apply_to(&source).expect("fits"));
        prop_assert_eq!(fixed.as_deref(), Some(after.as_str()));
    }
}
