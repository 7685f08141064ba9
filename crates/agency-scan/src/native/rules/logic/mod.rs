//! The logic rules, one per file. They flag code whose behaviour is almost certainly not what
//! was meant; none is auto-fixed, since the intended code is unknown.

mod constant_condition;
mod duplicate_condition;
mod infinite_loop;
mod unreachable_code;

use crate::native::FileRule;

/// The logic rules, by code.
pub const RULES: &[(&str, FileRule)] = &[
    ("AGY401", unreachable_code::unreachable_code),
    ("AGY402", infinite_loop::infinite_loop),
    ("AGY403", constant_condition::constant_condition),
    ("AGY404", duplicate_condition::duplicate_condition),
];

#[cfg(test)]
mod tests {
    use crate::native::rules::harness::check;

    #[test]
    fn agy401_unreachable_code() {
        check("AGY401", "logic");
    }

    #[test]
    fn agy402_infinite_loop() {
        check("AGY402", "logic");
    }

    #[test]
    fn agy403_constant_condition() {
        check("AGY403", "logic");
    }

    #[test]
    fn agy404_duplicate_condition() {
        check("AGY404", "logic");
    }
}
