//! A hint to the CPU, for loops whose next steps read memory far apart (a contact's state in
//! a table of millions): the loads overlap instead of waiting one by one.

/// Ask the CPU to start loading `x` into its cache: a hint, with no effect on any result.
#[inline(always)]
pub fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and cannot fault.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}
