//! Helpers the property tests of several crates share: hostile input made
//! by editing valid input a few bytes at a time.

use proptest::prelude::*;

/// One byte edit: where (a fraction of the length, in 2^-64ths, so that it
/// fits whatever the length is by then), which byte, and what to do there.
#[derive(Debug, Clone)]
pub struct Edit {
    at: u64,
    byte: u8,
    op: Op,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Overwrite,
    Delete,
    Insert,
}

/// Between 1 and `most` (>= 1) edits.
pub fn edits(most: usize) -> impl Strategy<Value = Vec<Edit>> {
    let op = prop_oneof![Just(Op::Overwrite), Just(Op::Delete), Just(Op::Insert)];
    let edit = (any::<u64>(), any::<u8>(), op).prop_map(|(at, byte, op)| Edit { at, byte, op });
    proptest::collection::vec(edit, 1..=most.max(1))
}

/// Applies `edits` in order; an overwrite or delete at the end inserts.
pub fn mutate(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let i = (((bytes.len() as u128 + 1) * e.at as u128) >> 64) as usize;
        match e.op {
            Op::Overwrite if i < bytes.len() => bytes[i] = e.byte,
            Op::Delete if i < bytes.len() => drop(bytes.remove(i)),
            _ => bytes.insert(i, e.byte),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An edit at position `i` of a 6-byte input.
    fn at(i: u128, op: Op) -> Vec<Edit> {
        vec![Edit { at: ((i << 64) / 7 + 1) as u64, byte: b'X', op }]
    }

    fn edited(edits: &[Edit]) -> Vec<u8> {
        let mut b = b"abcdef".to_vec();
        mutate(&mut b, edits);
        b
    }

    #[test]
    fn each_edit_does_what_it_says() {
        assert_eq!(edited(&at(2, Op::Overwrite)), b"abXdef");
        assert_eq!(edited(&at(2, Op::Delete)), b"abdef");
        assert_eq!(edited(&at(2, Op::Insert)), b"abXcdef");
        assert_eq!(edited(&at(0, Op::Insert)), b"Xabcdef");
        // At the end there is nothing to overwrite or delete: it inserts.
        assert_eq!(edited(&at(6, Op::Overwrite)), b"abcdefX");
        assert_eq!(edited(&at(6, Op::Delete)), b"abcdefX");
        let two = [at(0, Op::Delete), at(6, Op::Insert)].concat();
        assert_eq!(edited(&two), b"bcdefX");
    }
}
