//! Binary search over rows that are sorted by id but not a slice of ids:
//! the record catalogue's rows and the flat file's rows keep their id
//! inside each fixed-size row.

/// The position of the row whose id is `id` among `len` rows sorted by id,
/// where `id_at(i)` reads row `i`'s id.
pub fn position_of(len: usize, id_at: impl Fn(usize) -> u64, id: u64) -> Option<usize> {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match id_at(mid).cmp(&id) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::position_of;

    #[test]
    fn finds_every_stored_id_and_nothing_else() {
        let ids = [2u64, 3, 5, 8, 13, 21];
        for len in 0..=ids.len() {
            let at = |i: usize| ids[i];
            for (i, &id) in ids[..len].iter().enumerate() {
                assert_eq!(position_of(len, at, id), Some(i));
            }
            for missing in [0, 4, 9, 22] {
                assert_eq!(position_of(len, at, missing), None);
            }
        }
    }
}
