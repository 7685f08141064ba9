//! Rewrite templates on Python syntax trees (the learning loop's structural half).
