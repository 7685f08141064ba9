//! Reciprocal rank fusion: combines ranked lists from retrievers whose scores are not
//! comparable (cosine similarity and BM25) by rank alone.
//!
//! `score(d) = Σ_lists 1 / (k + rank_list(d))`, ranks starting at 1, `k` = 60 as in Cormack et
//! al. (SIGIR 2009). Ties are broken by the first list's order, then by id, so the output is
//! deterministic.

use std::collections::HashMap;

/// The conventional RRF constant.
pub const RRF_K: f64 = 60.0;

/// One fused result: the id, its fused score, and its 1-based rank in each input list.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub id: u64,
    pub score: f64,
    pub ranks: Vec<Option<u32>>,
}

/// Fuses ranked lists of ids (best first). An id may be missing from some lists.
pub fn reciprocal_rank_fusion(lists: &[&[u64]], k: f64) -> Vec<Fused> {
    let mut by_id: HashMap<u64, Fused> = HashMap::new();
    for (list_idx, list) in lists.iter().enumerate() {
        for (pos, &id) in list.iter().enumerate() {
            let rank = pos as u32 + 1;
            let entry = by_id.entry(id).or_insert_with(|| Fused {
                id,
                score: 0.0,
                ranks: vec![None; lists.len()],
            });
            if entry.ranks[list_idx].is_none() {
                entry.ranks[list_idx] = Some(rank);
                entry.score += 1.0 / (k + f64::from(rank));
            }
        }
    }
    let mut fused: Vec<Fused> = by_id.into_values().collect();
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| first_rank(a).cmp(&first_rank(b)))
            .then_with(|| a.id.cmp(&b.id))
    });
    fused
}

fn first_rank(f: &Fused) -> (usize, u32) {
    f.ranks
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.map(|r| (i, r)))
        .unwrap_or((usize::MAX, u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_wins_and_ranks_are_kept() {
        let vector = [1, 2, 3];
        let text = [3, 4, 1];
        let fused = reciprocal_rank_fusion(&[&vector, &text], RRF_K);
        let ids: Vec<u64> = fused.iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 3, 2, 4]);
        assert_eq!(fused[0].ranks, [Some(1), Some(3)]);
        assert_eq!(fused[2].ranks, [Some(2), None]);
    }

    #[test]
    fn duplicates_in_one_list_count_once() {
        let fused = reciprocal_rank_fusion(&[&[7, 7, 8]], RRF_K);
        assert!((fused[0].score - 1.0 / 61.0).abs() < 1e-12);
        assert_eq!(fused.len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn fusion_is_a_permutation_of_the_union(
            a in proptest::collection::vec(0_u64..50, 0..30),
            b in proptest::collection::vec(0_u64..50, 0..30),
        ) {
            let fused = reciprocal_rank_fusion(&[&a, &b], RRF_K);
            let mut got: Vec<u64> = fused.iter().map(|f| f.id).collect();
            got.sort_unstable();
            let mut want: Vec<u64> = a.iter().chain(&b).copied().collect();
            want.sort_unstable();
            want.dedup();
            proptest::prop_assert_eq!(got, want);
            for w in fused.windows(2) {
                proptest::prop_assert!(w[0].score >= w[1].score);
            }
        }
    }
}
