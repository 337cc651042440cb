//! The daemon's work on 64 counters at once (one word of cached bits).
//!
//! `md_bitmap_daemon_work()` looks at every counter of a pending counter page and acts only on
//! the raw values 1 and 2. Most of a sweep is finding those: [`masks`] finds them for a block
//! of 64 counters in a few vector instructions (SSE2's compare and `pmovmskb` through the
//! `safe_arch` crate; plain Rust on other targets, with the same results), and [`tick`]
//! applies the block's steps in one pass.

/// (bit k set ⇔ `v[k] == 1`, bit k set ⇔ `v[k] == 2`).
#[inline]
pub(super) fn masks(v: &[u16; 64]) -> (u64, u64) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return masks_sse2(v);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return masks_scalar(v);
}

/// [`masks`] in SSE2.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn masks_sse2(v: &[u16; 64]) -> (u64, u64) {
    use safe_arch::{
        cmp_eq_mask_i16_m128i as eq, m128i, move_mask_i8_m128i as movemask,
        pack_i16_to_i8_m128i as pack, set_splat_i16_m128i as splat,
    };
    let (one, two) = (splat(1), splat(2));
    let (mut m1, mut m2) = (0u64, 0u64);
    let (halves, _) = v.as_chunks::<8>();
    for (q, pair) in halves.chunks_exact(2).enumerate() {
        let (a, b) = (m128i::from(pair[0]), m128i::from(pair[1]));
        // Lanes of 0xFFFF / 0 packed to bytes of 0xFF / 0 keep their order, a's first.
        let e1 = movemask(pack(eq(a, one), eq(b, one))) as u16;
        let e2 = movemask(pack(eq(a, two), eq(b, two))) as u16;
        m1 |= u64::from(e1) << (16 * q);
        m2 |= u64::from(e2) << (16 * q);
    }
    (m1, m2)
}

/// [`masks`] in plain Rust (other targets; the tests check it on every target).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline]
fn masks_scalar(v: &[u16; 64]) -> (u64, u64) {
    let (mut m1, mut m2) = (0u64, 0u64);
    for (k, &c) in v.iter().enumerate() {
        m1 |= u64::from(c == 1) << k;
        m2 |= u64::from(c == 2) << k;
    }
    (m1, m2)
}

/// The daemon's step on 64 counters whose steps cannot free their page: raw 2 → 1 and, unless
/// `need_sync`, raw 1 → 0; everything else untouched. Returns (the lanes that went 1 → 0, whose
/// cached bits are cleared; the lanes that tick: 2 → 1, and the 1s kept at 1 under
/// `need_sync`, which keep the page pending). A block with neither is not written.
#[inline]
pub(super) fn tick(v: &mut [u16; 64], need_sync: bool) -> (u64, u64) {
    let (m1, m2) = masks(v);
    tick_masked(v, (m1, m2), need_sync)
}

/// [`tick`] for a block whose [`masks`] are `(m1, m2)`.
#[inline]
pub(super) fn tick_masked(v: &mut [u16; 64], (m1, m2): (u64, u64), need_sync: bool) -> (u64, u64) {
    if m1 | m2 == 0 {
        return (0, 0);
    }
    if need_sync {
        for c in v.iter_mut() {
            *c -= u16::from(*c == 2);
        }
        (0, m1 | m2)
    } else {
        for c in v.iter_mut() {
            *c -= u16::from(c.wrapping_sub(1) < 2);
        }
        (m1, m2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(v: &[u16; 64]) -> (u64, u64) {
        let (mut m1, mut m2) = (0, 0);
        for (k, &c) in v.iter().enumerate() {
            if c == 1 {
                m1 |= 1 << k;
            }
            if c == 2 {
                m2 |= 1 << k;
            }
        }
        (m1, m2)
    }

    /// Counters drawn mostly from the values the masks tell apart, plus flags and wide values.
    fn counter() -> impl Strategy<Value = u16> {
        prop_oneof![
            0u16..4,
            Just(0x8001u16),
            Just(0x4002),
            Just(0xFFFF),
            Just(0x0101),
            Just(0x0201),
            any::<u16>(),
        ]
    }

    fn block() -> impl Strategy<Value = [u16; 64]> {
        proptest::collection::vec(counter(), 64)
            .prop_map(|v| <[u16; 64]>::try_from(v).expect("64 counters"))
    }

    proptest! {
        #[test]
        fn masks_match_the_lanes(b in block()) {
            prop_assert_eq!(masks(&b), reference(&b));
            prop_assert_eq!(masks_scalar(&b), reference(&b));
        }

        #[test]
        fn tick_steps_only_ones_and_twos(mut b in block(), need_sync in any::<bool>()) {
            let before = b;
            let (m1, m2) = reference(&before);
            let (cleared, ticked) = tick(&mut b, need_sync);
            if need_sync {
                prop_assert_eq!((cleared, ticked), (0, m1 | m2));
            } else {
                prop_assert_eq!((cleared, ticked), (m1, m2));
            }
            for k in 0..64 {
                let want = match before[k] {
                    2 => 1,
                    1 if !need_sync => 0,
                    c => c,
                };
                prop_assert_eq!(b[k], want, "lane {}", k);
            }
        }
    }
}
