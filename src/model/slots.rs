//! One contact's decayed engagement per hour-of-week slot, stored compactly.
//!
//! Most contacts engage in a handful of the 168 slots (in 100M generated events the median is
//! 9, the 99th percentile 21), so a dense `[f32; 168]` per contact is mostly zeros: 1.3 GB for
//! 2M contacts, and on a virtual machine first touching that much fresh memory costs more than
//! adding the events. A row keeps up to [`INLINE`] slots in place (96 bytes) and moves to a
//! dense array on the heap only for a contact that engages in more.

use std::fmt;

use crate::time::SLOTS;

/// Slots kept in place before a row moves to a dense array.
pub const INLINE: usize = 16;

/// Decayed weight per slot for one contact. Adding the same values in the same order gives
/// bit-for-bit the sums a dense array would hold.
#[derive(Clone, Default)]
#[repr(C)]
pub struct SlotWeights {
    /// The slots of `weights[..len]`, in the order they first appeared.
    slots: [u8; INLINE],
    len: u8,
    /// Set once the contact has engaged in more than `INLINE` slots; then it holds everything.
    dense: Option<Box<[f32; SLOTS]>>,
    weights: [f32; INLINE],
}

impl SlotWeights {
    /// Add `w` to `slot` (which must be below [`SLOTS`]).
    #[inline]
    pub fn add(&mut self, slot: usize, w: f32) {
        if let Some(dense) = &mut self.dense {
            dense[slot] += w;
            return;
        }
        let n = self.len as usize;
        if let Some(i) = self.find(slot as u8) {
            self.weights[i] += w;
        } else if n < INLINE {
            self.slots[n] = slot as u8;
            self.weights[n] = 0.0 + w;
            self.len += 1;
        } else {
            let mut dense = Box::new(self.to_dense());
            dense[slot] += w;
            self.dense = Some(dense);
            self.len = 0;
        }
    }

    /// Position of `slot` among the inline slots: all 16 compared at once, without branches
    /// (the lowest zero byte of `slots ^ slot`, found with the usual carry trick, is exact).
    #[inline]
    fn find(&self, slot: u8) -> Option<usize> {
        const ONES: u128 = u128::MAX / 255;
        let x = u128::from_le_bytes(self.slots) ^ (ONES * slot as u128);
        let zero_bytes = x.wrapping_sub(ONES) & !x & (ONES << 7);
        let live = u128::MAX
            .checked_shr(128 - 8 * self.len as u32)
            .unwrap_or(0);
        let hit = zero_bytes & live;
        (hit != 0).then(|| hit.trailing_zeros() as usize / 8)
    }

    /// Where `slot`'s weight is held when the row is dense (to prefetch it).
    #[inline]
    pub fn dense_slot(&self, slot: usize) -> Option<&f32> {
        self.dense.as_ref().map(|d| &d[slot % SLOTS])
    }

    pub fn get(&self, slot: usize) -> f32 {
        match &self.dense {
            Some(dense) => dense[slot],
            None => self.find(slot as u8).map_or(0.0, |i| self.weights[i]),
        }
    }

    /// The slots with a weight, as (slot, weight); inline rows in first-seen order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        let inline = self.slots[..self.len as usize]
            .iter()
            .zip(&self.weights)
            .map(|(s, w)| (*s as usize, *w));
        let dense = self
            .dense
            .iter()
            .flat_map(|d| d.iter().copied().enumerate().filter(|(_, w)| *w != 0.0));
        inline.chain(dense)
    }

    pub fn to_dense(&self) -> [f32; SLOTS] {
        match &self.dense {
            Some(dense) => **dense,
            None => {
                let mut out = [0.0; SLOTS];
                for (s, w) in self.iter() {
                    out[s] = w;
                }
                out
            }
        }
    }
}

impl PartialEq for SlotWeights {
    fn eq(&self, other: &Self) -> bool {
        self.to_dense() == other.to_dense()
    }
}

impl fmt::Debug for SlotWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut slots: Vec<(usize, f32)> = self.iter().collect();
        slots.sort_by_key(|(s, _)| *s);
        f.debug_map().entries(slots).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_a_dense_array_before_and_after_spilling() {
        let mut row = SlotWeights::default();
        let mut dense = [0.0f32; SLOTS];
        // 40 distinct slots, revisited: the row spills to dense after the 16th.
        for i in 0..400usize {
            let (slot, w) = (i * 37 % 40 * 4 % SLOTS, 0.1 + (i % 7) as f32 * 0.3);
            row.add(slot, w);
            dense[slot] += w;
            assert_eq!(row.to_dense(), dense, "after {} adds", i + 1);
            assert_eq!(row.get(slot), dense[slot]);
        }
        assert!(row.dense.is_some());
        let mut listed: Vec<(usize, f32)> = row.iter().collect();
        listed.sort_by_key(|(s, _)| *s);
        let expected: Vec<(usize, f32)> = dense
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, w)| *w != 0.0)
            .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn few_slots_stay_inline() {
        let mut row = SlotWeights::default();
        for slot in [5, 167, 5, 0] {
            row.add(slot, 1.0);
        }
        assert!(row.dense.is_none());
        assert_eq!(
            row.iter().collect::<Vec<_>>(),
            [(5, 2.0), (167, 1.0), (0, 1.0)]
        );
        assert_eq!((row.get(5), row.get(6)), (2.0, 0.0));
        assert_eq!(std::mem::size_of::<SlotWeights>(), 96);
    }
}
