//! The same guest program as a multiboot (v1) image, for QEMU (`-kernel`), so precopy
//! and QEMU migrate the same guest (`scripts/qemu-compare.sh`).
//!
//! The image loads at 1 MiB (the firmware owns the first MiB), its system area laid out
//! as in [`program`](super::program) from there, identity-mapped over flat memory. The
//! user loop and the page tables' shape are the same; what differs is who sets the
//! machine up and how the loop is paced. A 32-bit entry switches to long mode (PAE,
//! EFER.LME, paging), loads the IDT and TSS, programs the PIC and the PIT (1 kHz), and
//! `iretq`s to the loop at CPL3; the #UD handler waits for the next timer tick
//! (`sti; hlt`) instead of an exit the host answers, since QEMU answers port I/O at once.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use super::program::{write_system, Image, PaceExit, CODE_ADDR, MAP_GRANULE, PAGE};
use super::KvmError;
use crate::layout::GuestLayout;

/// Where the image loads.
pub const LOAD_ADDR: u64 = 0x10_0000;
/// Offset of the 32-bit entry in the image.
const ENTRY: u64 = 0x40;

/// The 32-bit multiboot entry (CPL0, paging off), linked at `LOAD_ADDR + ENTRY`:
///
/// ```text
/// 100040: fa                    cli
/// 100041: 0f 01 15 00 2f 10 00  lgdtl  0x102f00
/// 100048: b8 00 00 11 00        mov    $0x110000, %eax       # PML4
/// 10004d: 0f 22 d8              mov    %eax, %cr3
/// 100050: 0f 20 e0              mov    %cr4, %eax
/// 100053: 83 c8 20              or     $0x20, %eax           # PAE
/// 100056: 0f 22 e0              mov    %eax, %cr4
/// 100059: b9 80 00 00 c0        mov    $0xc0000080, %ecx     # EFER
/// 10005e: 0f 32                 rdmsr
/// 100060: 0d 00 01 00 00        or     $0x100, %eax          # LME
/// 100065: 0f 30                 wrmsr
/// 100067: 0f 20 c0              mov    %cr0, %eax
/// 10006a: 0d 01 00 00 80        or     $0x80000001, %eax     # PG, PE
/// 10006f: 0f 22 c0              mov    %eax, %cr0
/// 100072: ea 79 00 10 00 08 00  ljmp   $0x8, $0x100079
/// .code64
/// 100079: 66 b8 10 00           mov    $0x10, %ax
/// 10007d: 8e d8 8e c0 8e d0     mov    %ax, %ds; %es; %ss
/// 100083: bc 00 80 10 00        mov    $0x108000, %esp       # kernel stack
/// 100088: 0f 01 1c 25 10 2f 10 00  lidt 0x102f10
/// 100090: 66 b8 28 00 0f 00 d8  mov $0x28, %ax; ltr %ax
///         b0 11 e6 20 e6 a0     PIC: ICW1 to both
///         b0 20 e6 21 b0 28 e6 a1   ICW2: vectors 0x20, 0x28
///         b0 04 e6 21 b0 02 e6 a1   ICW3
///         b0 01 e6 21 e6 a1     ICW4: 8086 mode
///         b0 fe e6 21 b0 ff e6 a1   mask all but IRQ 0
///         b0 34 e6 43           PIT channel 0, rate generator
///         b0 a9 e6 40 b0 04 e6 40   divisor 1193 (1 kHz)
///         31 db                 xor %ebx, %ebx                # counter
///         41 bf 00 10 10 00     mov $0x101000, %r15d          # parameters
///         4d 8b 6f 08           mov 8(%r15), %r13             # set
///         4d 8b 67 10           mov 16(%r15), %r12            # working-set base
///         4d 8b 77 18           mov 24(%r15), %r14            # counter address
///         6a 1b 68 00 a0 10 00  push $0x1b; push $0x10a000    # user SS, RSP
///         6a 02 6a 23           push $2; push $0x23           # RFLAGS, user CS
///         68 00 40 10 00 48 cf  push $0x104000; iretq         # the user loop
/// ```
const BOOT32: [u8; 173] = [
    0xfa, 0x0f, 0x01, 0x15, 0x00, 0x2f, 0x10, 0x00, 0xb8, 0x00, 0x00, 0x11, 0x00, 0x0f, 0x22, 0xd8,
    0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32,
    0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x20, 0xc0, 0x0d, 0x01, 0x00, 0x00, 0x80, 0x0f,
    0x22, 0xc0, 0xea, 0x79, 0x00, 0x10, 0x00, 0x08, 0x00, 0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e,
    0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x80, 0x10, 0x00, 0x0f, 0x01, 0x1c, 0x25, 0x10, 0x2f, 0x10, 0x00,
    0x66, 0xb8, 0x28, 0x00, 0x0f, 0x00, 0xd8, 0xb0, 0x11, 0xe6, 0x20, 0xe6, 0xa0, 0xb0, 0x20, 0xe6,
    0x21, 0xb0, 0x28, 0xe6, 0xa1, 0xb0, 0x04, 0xe6, 0x21, 0xb0, 0x02, 0xe6, 0xa1, 0xb0, 0x01, 0xe6,
    0x21, 0xe6, 0xa1, 0xb0, 0xfe, 0xe6, 0x21, 0xb0, 0xff, 0xe6, 0xa1, 0xb0, 0x34, 0xe6, 0x43, 0xb0,
    0xa9, 0xe6, 0x40, 0xb0, 0x04, 0xe6, 0x40, 0x31, 0xdb, 0x41, 0xbf, 0x00, 0x10, 0x10, 0x00, 0x4d,
    0x8b, 0x6f, 0x08, 0x4d, 0x8b, 0x67, 0x10, 0x4d, 0x8b, 0x77, 0x18, 0x6a, 0x1b, 0x68, 0x00, 0xa0,
    0x10, 0x00, 0x6a, 0x02, 0x6a, 0x23, 0x68, 0x00, 0x40, 0x10, 0x00, 0x48, 0xcf,
];

/// The #UD handler of the image (CPL0): wait for the next PIT tick, return past the
/// `ud2`.
///
/// ```text
/// fb                sti
/// f4                hlt
/// 48 83 04 24 02    addq  $2, (%rsp)
/// 48 cf             iretq
/// ```
const UD_HANDLER_TICK: [u8; 9] = [0xfb, 0xf4, 0x48, 0x83, 0x04, 0x24, 0x02, 0x48, 0xcf];

/// A multiboot image of the guest program for `memory` bytes of flat RAM (QEMU `-m`),
/// writing `batch` pages per 1 kHz tick over `set_pages` pages from 2 MiB.
pub fn multiboot_image(memory: u64, set_pages: u64, batch: u64) -> Result<Vec<u8>, KvmError> {
    let layout = GuestLayout::flat(PAGE, memory)
        .map_err(|e| KvmError::Config(format!("guest memory: {e}")))?;
    if memory % MAP_GRANULE != 0 || !(8 * MAP_GRANULE..=4 << 30).contains(&memory) {
        return Err(KvmError::Config(
            "multiboot image: memory must be a multiple of 2 MiB from 16 MiB to 4 GiB".into(),
        ));
    }
    let max_set = (memory - super::program::WORKING_SET_BASE) / PAGE;
    if set_pages == 0 || set_pages > max_set {
        return Err(KvmError::Config(format!(
            "multiboot image: working set of {set_pages} pages, at most {max_set}"
        )));
    }
    let pds = (memory / MAP_GRANULE).div_ceil(512);
    let len = 0x12000 + pds * PAGE;
    let mut bytes = vec![0u8; len as usize];
    {
        let mut put = |gpa: u64, data: &[u8]| -> Result<(), KvmError> {
            let off = gpa
                .checked_sub(LOAD_ADDR)
                .filter(|o| o + data.len() as u64 <= len)
                .ok_or(KvmError::BadAddress {
                    gpa,
                    len: data.len(),
                })? as usize;
            bytes[off..off + data.len()].copy_from_slice(data);
            Ok(())
        };
        let mut img = Image {
            base: LOAD_ADDR,
            put: &mut put,
            tss_type: 0x89, // available: the entry's `ltr` marks it busy
            ud_handler: &UD_HANDLER_TICK,
        };
        write_system(&mut img, &layout, set_pages, batch, PaceExit::InvalidOpcode)?;
    }
    // The multiboot header with the address fields (flag 16): load the whole file at
    // LOAD_ADDR, no bss, enter at the 32-bit entry.
    const MAGIC: u32 = 0x1bad_b002;
    const FLAGS: u32 = 1 << 16;
    let header: [u32; 8] = [
        MAGIC,
        FLAGS,
        0u32.wrapping_sub(MAGIC).wrapping_sub(FLAGS),
        LOAD_ADDR as u32,
        LOAD_ADDR as u32,
        (LOAD_ADDR + len) as u32,
        0,
        (LOAD_ADDR + ENTRY) as u32,
    ];
    for (i, w) in header.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    bytes[ENTRY as usize..ENTRY as usize + BOOT32.len()].copy_from_slice(&BOOT32);
    debug_assert!(ENTRY as usize + BOOT32.len() < CODE_ADDR as usize);
    Ok(bytes)
}
