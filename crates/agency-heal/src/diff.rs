//! Unified diffs of a fix (3 lines of context, `--- a/FILE` / `+++ b/FILE`), as `git diff`
//! and `patch` read them.

use similar::TextDiff;

/// The unified diff from `before` to `after` of `file` (relative, `/`-separated); empty when
/// they are equal.
pub fn unified(file: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{file}"), &format!("b/{file}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_import_with_context() {
        let before = "import os\nimport sys\n\n\ndef main():\n    return sys.argv\n";
        let after = "import sys\n\n\ndef main():\n    return sys.argv\n";
        assert_eq!(
            unified("pkg/mod.py", before, after),
            "--- a/pkg/mod.py\n+++ b/pkg/mod.py\n@@ -1,4 +1,3 @@\n-import os\n import sys\n \n \n"
        );
    }

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a.py", "x\n", "x\n"), "");
    }

    #[test]
    fn missing_final_newline_is_marked() {
        let diff = unified("a.py", "x = 1", "x = 2");
        assert!(
            diff.contains("-x = 1\n\\ No newline at end of file\n+x = 2\n"),
            "{diff}"
        );
    }
}
