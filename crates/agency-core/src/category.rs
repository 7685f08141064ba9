//! The seven kinds of problem `agency` finds; the strings are part of the JSON contract.

use std::fmt;
use std::str::FromStr;

/// A finding's or pattern's category, as named in `CONTRACT.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Type,
    Import,
    Style,
    Security,
    Performance,
    Logic,
    Runtime,
}

impl Category {
    /// Every category, in contract order.
    pub const ALL: [Category; 7] = [
        Category::Type,
        Category::Import,
        Category::Style,
        Category::Security,
        Category::Performance,
        Category::Logic,
        Category::Runtime,
    ];

    /// The contract name (`"type"`, `"import"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Type => "type",
            Category::Import => "import",
            Category::Style => "style",
            Category::Security => "security",
            Category::Performance => "performance",
            Category::Logic => "logic",
            Category::Runtime => "runtime",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a category name that is not one of the seven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown category `{0}`: expected one of type, import, style, security, performance, logic, runtime"
)]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownCategory(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
        }
        assert_eq!("Security".parse::<Category>(), Ok(Category::Security));
        assert!("types".parse::<Category>().is_err());
    }
}
