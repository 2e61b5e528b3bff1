//! Transparent huge pages for guest memory: a large, mostly-zero guest is read
//! through the kernel's huge zero page (one fault per 2 MiB instead of per 4 KiB), and
//! written in 2 MiB pages, the way VMMs back guest RAM.

/// Asks the kernel to back `len` bytes at `ptr` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)` over the 2 MiB-aligned part). Only advice: returns
/// whether the kernel took it; elsewhere than Linux, does nothing and returns false.
pub fn advise_huge_pages(ptr: *const u8, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize).saturating_add(len) & !(HUGE - 1);
        if end <= start {
            return false;
        }
        // SAFETY: madvise only changes how the kernel backs the pages of
        // `start..end`, which lie within the caller's allocation `ptr..ptr + len`; it
        // reads and writes no memory, and MADV_HUGEPAGE keeps the contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, len);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_keeps_the_contents_and_refuses_small_ranges() {
        let mut v = std::vec![0u8; 8 << 20];
        v[5 << 20] = 7;
        let took = advise_huge_pages(v.as_ptr(), v.len());
        // Where THP exists in any mode but "never", madvise succeeds.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"));
        if cfg!(target_os = "linux") && thp {
            assert!(took);
        }
        assert_eq!(v[5 << 20], 7);
        assert!(v.iter().filter(|&&b| b != 0).count() == 1);
        assert!(
            !advise_huge_pages(v.as_ptr(), 4096),
            "no whole 2 MiB page in it"
        );
    }
}
