//! The performance rules, one per file. Each finding carries an impact estimate (percent of the
//! enclosing work a fix saves), which the heal engine's approval rule reads. The rules that
//! look at loops share one walk (`loops`).

mod list_membership_in_loop;
mod loop_invariant_call;
mod loops;
mod n_plus_one_query;
mod sorted_for_min_max;
mod string_concat_in_loop;

use crate::native::FileRule;

/// The performance rules, by code.
pub const RULES: &[(&str, FileRule)] = &[
    ("AGY301", list_membership_in_loop::list_membership_in_loop),
    ("AGY302", string_concat_in_loop::string_concat_in_loop),
    ("AGY303", loop_invariant_call::loop_invariant_call),
    ("AGY304", n_plus_one_query::n_plus_one_query),
    ("AGY305", sorted_for_min_max::sorted_for_min_max),
];

#[cfg(test)]
mod tests {
    use crate::native::rules::harness::check;

    #[test]
    fn agy301_list_membership_in_loop() {
        check("AGY301", "performance");
    }

    #[test]
    fn agy302_string_concat_in_loop() {
        check("AGY302", "performance");
    }

    #[test]
    fn agy303_loop_invariant_call() {
        check("AGY303", "performance");
    }

    #[test]
    fn agy304_n_plus_one_query() {
        check("AGY304", "performance");
    }

    #[test]
    fn agy305_sorted_for_min_max() {
        check("AGY305", "performance");
    }
}
