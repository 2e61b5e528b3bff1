//! The guest program: a 64-bit long-mode guest whose writing loop runs at CPL3
//! (natively, even where KVM interprets CPL0 code), and the system structures the host
//! puts in its memory before it starts (page tables, GDT, TSS, IDT), so the guest never
//! runs set-up code of its own.
//!
//! Guest-physical (= virtual) map of the first 2 MiB, which must be the start of the
//! layout's first region:
//!
//! ```text
//! 0x1000  parameters (u64 batch: pages to write before each pacing exit; read only)
//! 0x2000  GDT (null, kernel code/data, user data/code, TSS), TSS at 0x2100
//! 0x3000  IDT (vectors 0..32: #UD to the pacing handler, the rest to fault stubs)
//! 0x4000  code: the user loop at 0x4000, the #UD handler at 0x4040, fault stubs at 0x4100
//! 0x5000  the counter page (the fixed address the loop writes the counter to)
//! 0x8000  top of the kernel stack (TSS.RSP0); 0xa000 top of the user stack
//! 0x10000 page tables: PML4, PDPT, then one page directory per GiB (2 MiB pages)
//! ```
//!
//! Virtual address `v` maps to dense page `v / 4096` of the layout (2 MiB pages), so
//! the guest sees its memory as one range even where the layout has a hole; the
//! working set is `[2 MiB, 2 MiB + set * 4096)` of that range.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use super::ram::GuestRam;
use super::KvmError;
use crate::layout::GuestLayout;

/// The parameters page (the batch size lives at its first `u64`).
pub const PARAMS_ADDR: u64 = 0x1000;
/// The GDT.
const GDT_ADDR: u64 = 0x2000;
/// The TSS (inside the GDT's page).
const TSS_ADDR: u64 = 0x2100;
/// The IDT.
const IDT_ADDR: u64 = 0x3000;
/// The user loop's first instruction.
pub const CODE_ADDR: u64 = 0x4000;
/// The #UD handler.
pub(super) const UD_HANDLER: u64 = CODE_ADDR + 0x40;
/// The fault stubs (one per vector, [`FAULT_STUB_LEN`] bytes each).
const FAULT_STUBS: u64 = CODE_ADDR + 0x100;
/// Bytes per fault stub.
const FAULT_STUB_LEN: u64 = 6;
/// Where the loop writes the counter after each page write.
pub const COUNTER_ADDR: u64 = 0x5000;
/// Top of the stack exceptions from CPL3 run on.
const KERNEL_STACK_TOP: u64 = 0x8000;
/// Top of the user stack (the loop uses none; set for completeness).
const USER_STACK_TOP: u64 = 0xa000;
/// The page tables.
const PML4_ADDR: u64 = 0x10000;
/// Virtual address of the working set's first page.
pub const WORKING_SET_BASE: u64 = 2 << 20;
/// The granule of the guest's mapping (2 MiB pages): every region of the layout
/// starts and ends on one.
pub const MAP_GRANULE: u64 = 2 << 20;
/// The most memory the page tables map (one page directory per GiB, below 2 MiB).
pub const MAX_MEMORY: u64 = 64 << 30;
/// The port of the pacing exit.
pub const PACE_PORT: u16 = 0xf0;
/// The port a fault stub reports on (`al` = the vector).
pub const FAULT_PORT: u16 = 0xf1;
/// The page size of the guest (x86 base pages; KVM logs at this granularity).
pub const PAGE: u64 = 4096;

/// How the loop exits to the host to be paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaceExit {
    /// `out` at CPL3 (RFLAGS.IOPL = 3): one port I/O exit, no CPL0 code at all. The
    /// kvm-pvm this was built on raises #GP for it (the guest stops with "exception
    /// vector 13"); use [`PaceExit::InvalidOpcode`] there.
    PortIo,
    /// `ud2` at CPL3; the #UD handler (CPL0) does the `out`, skips the `ud2` and
    /// `iretq`s (for a KVM that does not let CPL3 do port I/O).
    InvalidOpcode,
}

/// The user loop (CPL3), at [`CODE_ADDR`]. In: `rbx` = counter, `r12` = working set
/// base, `r13` = working set pages, `r14` = [`COUNTER_ADDR`], `r15` = [`PARAMS_ADDR`].
/// Bytes 0x23..0x25 are the pacing instruction ([`PaceExit`]).
///
/// ```text
///  0: 49 8b 0f        top:  mov  (%r15), %rcx        # batch, set by the host
///  3: 48 85 c9              test %rcx, %rcx
///  6: 74 1b                 je   pace
///  8: 48 ff c3        1:    inc  %rbx                # the counter
///  b: 48 89 d8              mov  %rbx, %rax
///  e: 31 d2                 xor  %edx, %edx
/// 10: 49 f7 f5              div  %r13                # rdx = counter mod set
/// 13: 48 c1 e2 0c           shl  $12, %rdx
/// 17: 49 89 1c 14           mov  %rbx, (%r12,%rdx)   # page (counter mod set)
/// 1b: 49 89 1e              mov  %rbx, (%r14)        # the fixed address
/// 1e: 48 ff c9              dec  %rcx
/// 21: 75 e5                 jne  1b
/// 23: e6 f0          pace:  out  %al, $0xf0          # or: 0f 0b  ud2
/// 25: eb d9                 jmp  top
/// ```
const USER_LOOP: [u8; 0x27] = [
    0x49, 0x8b, 0x0f, 0x48, 0x85, 0xc9, 0x74, 0x1b, 0x48, 0xff, 0xc3, 0x48, 0x89, 0xd8, 0x31, 0xd2,
    0x49, 0xf7, 0xf5, 0x48, 0xc1, 0xe2, 0x0c, 0x49, 0x89, 0x1c, 0x14, 0x49, 0x89, 0x1e, 0x48, 0xff,
    0xc9, 0x75, 0xe5, 0xe6, 0xf0, 0xeb, 0xd9,
];
/// Offset of the pacing instruction in [`USER_LOOP`].
const PACE_OFFSET: usize = 0x23;
/// `ud2`.
const UD2: [u8; 2] = [0x0f, 0x0b];

/// The #UD handler (CPL0), at [`UD_HANDLER`]:
///
/// ```text
/// e6 f0              out   %al, $0xf0      # the pacing exit
/// 48 83 04 24 02     addq  $2, (%rsp)      # return past the ud2
/// 48 cf              iretq
/// ```
const UD_HANDLER_CODE: [u8; 9] = [0xe6, 0xf0, 0x48, 0x83, 0x04, 0x24, 0x02, 0x48, 0xcf];

/// A fault stub for vector `v` (CPL0): `mov $v, %al; out %al, $0xf1; jmp .`
/// (`b0 v e6 f1 eb fe`).
const fn fault_stub(vector: u8) -> [u8; FAULT_STUB_LEN as usize] {
    [0xb0, vector, 0xe6, 0xf1, 0xeb, 0xfe]
}

/// The guest's memory map for `memory` bytes: half (rounded down to 2 MiB, at most
/// 3 GiB) at 0, the rest at 4 GiB, with the hole between (like a PC's PCI hole).
pub fn layout_for(memory: u64) -> Result<GuestLayout, KvmError> {
    if memory % MAP_GRANULE != 0 || !(2 * MAP_GRANULE..=MAX_MEMORY).contains(&memory) {
        return Err(KvmError::Config(format!(
            "guest memory of {memory} bytes: must be a multiple of 2 MiB from 4 MiB to {} GiB",
            MAX_MEMORY >> 30
        )));
    }
    let low = (memory / 2 / MAP_GRANULE * MAP_GRANULE).min(3 << 30);
    let high = memory - low;
    GuestLayout::new(PAGE, &[(0, low), (4 << 30, high)])
        .map_err(|e| KvmError::Config(format!("guest layout: {e}")))
}

/// The most working-set pages a guest of `layout` has room for.
pub fn max_working_set(layout: &GuestLayout) -> u64 {
    layout.total_pages().saturating_sub(WORKING_SET_BASE / PAGE)
}

/// Writes the program and its system structures into `ram`, with a working set of
/// `set_pages` pages and the pacing exit `exit`. Returns the vCPU's first registers.
pub fn load(ram: &GuestRam, set_pages: u64, exit: PaceExit) -> Result<kvm_regs, KvmError> {
    let layout = *ram.layout();
    check_layout(&layout)?;
    if set_pages == 0 || set_pages > max_working_set(&layout) {
        return Err(KvmError::Config(format!(
            "working set of {set_pages} pages: must be 1 to {} pages for {} MiB of memory",
            max_working_set(&layout),
            layout.total_bytes() >> 20
        )));
    }
    let mut put = |gpa: u64, bytes: &[u8]| ram.write(gpa, bytes);
    let mut img = Image {
        base: 0,
        put: &mut put,
        tss_type: 0x8b, // busy: the host loads TR
        ud_handler: &UD_HANDLER_CODE,
    };
    write_system(&mut img, &layout, set_pages, 0, exit)?;
    let iopl = match exit {
        PaceExit::PortIo => 3 << 12,
        PaceExit::InvalidOpcode => 0,
    };
    Ok(kvm_regs {
        rip: CODE_ADDR,
        rsp: USER_STACK_TOP,
        rflags: 0x2 | iopl,
        rbx: 0,
        r12: WORKING_SET_BASE,
        r13: set_pages,
        r14: COUNTER_ADDR,
        r15: PARAMS_ADDR,
        ..Default::default()
    })
}

/// The layout's first region starts at 0 and holds the system area; every region is
/// 2 MiB-aligned; the whole is at most [`MAX_MEMORY`].
fn check_layout(layout: &GuestLayout) -> Result<(), KvmError> {
    let regions = layout.regions();
    let bad = |why: &str| KvmError::Config(format!("guest layout: {why}"));
    if layout.page_size() != PAGE {
        return Err(bad("the page size must be 4096"));
    }
    if regions.first().is_none_or(|r| r.guest_addr != 0) {
        return Err(bad("the first region must start at guest address 0"));
    }
    if regions
        .iter()
        .any(|r| r.guest_addr % MAP_GRANULE != 0 || (r.pages * PAGE) % MAP_GRANULE != 0)
    {
        return Err(bad("every region must start and end on 2 MiB"));
    }
    if layout.total_bytes() > MAX_MEMORY || layout.total_bytes() < 2 * MAP_GRANULE {
        return Err(bad("memory must be 4 MiB to 64 GiB"));
    }
    Ok(())
}

/// Writes bytes at a guest-physical address.
pub(super) type Put<'a> = dyn FnMut(u64, &[u8]) -> Result<(), KvmError> + 'a;

/// Where the system structures go: guest-physical `base + offset` (base 0 in a KVM
/// guest here; 1 MiB in the multiboot image, where the firmware owns the first MiB).
pub(super) struct Image<'a> {
    /// Guest-physical address of offset 0.
    pub base: u64,
    /// Writes bytes at a guest-physical address.
    pub put: &'a mut Put<'a>,
    /// The TSS descriptor's type byte: busy (0x8b) when the host loads TR, available
    /// (0x89) when the guest's `ltr` does.
    pub tss_type: u8,
    /// The #UD handler's code.
    pub ud_handler: &'a [u8],
}

impl Image<'_> {
    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), KvmError> {
        (self.put)(self.base + offset, bytes)
    }
    fn write_u64(&mut self, offset: u64, value: u64) -> Result<(), KvmError> {
        self.write(offset, &value.to_le_bytes())
    }
}

/// The IRQ 0 handler (CPL0, vector 32, at [`IRQ0_HANDLER`]; only the multiboot image's
/// guest takes interrupts): EOI to the PIC.
///
/// ```text
/// 50           push  %rax
/// b0 20        mov   $0x20, %al
/// e6 20        out   %al, $0x20
/// 58           pop   %rax
/// 48 cf        iretq
/// ```
const IRQ0_CODE: [u8; 8] = [0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0x48, 0xcf];
/// Offset of the IRQ 0 handler.
const IRQ0_HANDLER: u64 = CODE_ADDR + 0x60;
/// IDT entries: the 32 exceptions and IRQ 0 (remapped to 32).
const IDT_ENTRIES: u64 = 33;

/// Writes everything but the code's first registers: page tables mapping virtual `v`
/// to the guest-physical address of dense page `v / 4096` of `layout`, GDT, TSS, IDT,
/// the code and the parameters (batch, set, working-set base, counter address).
pub(super) fn write_system(
    img: &mut Image<'_>,
    layout: &GuestLayout,
    set_pages: u64,
    batch: u64,
    exit: PaceExit,
) -> Result<(), KvmError> {
    write_page_tables(img, layout)?;
    write_gdt_tss(img)?;
    write_idt(img)?;
    let mut code = USER_LOOP;
    if exit == PaceExit::InvalidOpcode {
        code[PACE_OFFSET..PACE_OFFSET + 2].copy_from_slice(&UD2);
    }
    img.write(CODE_ADDR, &code)?;
    let ud = img.ud_handler;
    img.write(UD_HANDLER, ud)?;
    img.write(IRQ0_HANDLER, &IRQ0_CODE)?;
    for v in 0..32u8 {
        img.write(FAULT_STUBS + u64::from(v) * FAULT_STUB_LEN, &fault_stub(v))?;
    }
    let base = img.base;
    img.write_u64(PARAMS_ADDR, batch)?;
    img.write_u64(PARAMS_ADDR + 8, set_pages)?;
    img.write_u64(PARAMS_ADDR + 16, WORKING_SET_BASE)?;
    img.write_u64(PARAMS_ADDR + 24, base + COUNTER_ADDR)?;
    // The descriptor-table pointers the multiboot entry loads (limit u16, base u64).
    let mut gdt_ptr = [0u8; 10];
    gdt_ptr[..2].copy_from_slice(&(7u16 * 8 - 1).to_le_bytes());
    gdt_ptr[2..].copy_from_slice(&(base + GDT_ADDR).to_le_bytes());
    img.write(GDT_PTR, &gdt_ptr)?;
    let mut idt_ptr = [0u8; 10];
    idt_ptr[..2].copy_from_slice(&((IDT_ENTRIES * 16 - 1) as u16).to_le_bytes());
    idt_ptr[2..].copy_from_slice(&(base + IDT_ADDR).to_le_bytes());
    img.write(IDT_PTR, &idt_ptr)?;
    Ok(())
}

/// Where the GDT pointer lives (for `lgdt`).
pub(super) const GDT_PTR: u64 = 0x2f00;
/// Where the IDT pointer lives (for `lidt`).
pub(super) const IDT_PTR: u64 = 0x2f10;

/// PML4 -> one PDPT -> a page directory per GiB of 2 MiB pages: virtual `v` maps to the
/// guest-physical address of dense page `v / 4096`. Every level is user-accessible
/// and writable.
fn write_page_tables(img: &mut Image<'_>, layout: &GuestLayout) -> Result<(), KvmError> {
    const PRESENT_RW_USER: u64 = 0x7;
    const LARGE: u64 = 0x80;
    let base = img.base;
    let pdpt = PML4_ADDR + PAGE;
    let first_pd = pdpt + PAGE;
    img.write_u64(PML4_ADDR, (base + pdpt) | PRESENT_RW_USER)?;
    let chunks = layout.total_bytes() / MAP_GRANULE;
    let pds = chunks.div_ceil(512);
    for i in 0..pds {
        img.write_u64(pdpt + i * 8, (base + first_pd + i * PAGE) | PRESENT_RW_USER)?;
    }
    for chunk in 0..chunks {
        let gpa = layout
            .addr_of(chunk * (MAP_GRANULE / PAGE))
            .map_err(|e| KvmError::Config(format!("guest layout: {e}")))?;
        img.write_u64(first_pd + chunk * 8, gpa | PRESENT_RW_USER | LARGE)?;
    }
    Ok(())
}

/// Selectors.
const KERNEL_CS: u16 = 0x08;
const USER_DS: u16 = 0x18 | 3;
const USER_CS: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;
/// Bytes of the TSS less one.
const TSS_LIMIT: u32 = 0x67;

fn write_gdt_tss(img: &mut Image<'_>) -> Result<(), KvmError> {
    let tss = img.base + TSS_ADDR;
    let tss_low = u64::from(TSS_LIMIT & 0xffff)
        | (tss & 0xff_ffff) << 16
        | u64::from(img.tss_type) << 40
        | ((tss >> 24) & 0xff) << 56;
    let gdt: [u64; 7] = [
        0,
        0x00af_9a00_0000_ffff, // kernel code, 64-bit
        0x00cf_9200_0000_ffff, // kernel data
        0x00cf_f200_0000_ffff, // user data (DPL 3)
        0x00af_fa00_0000_ffff, // user code, 64-bit (DPL 3)
        tss_low,
        tss >> 32,
    ];
    for (i, d) in gdt.iter().enumerate() {
        img.write_u64(GDT_ADDR + i as u64 * 8, *d)?;
    }
    // TSS: RSP0 at 4, the I/O map base past the limit (no I/O bitmap).
    img.write(TSS_ADDR, &[0; 0x68])?;
    img.write_u64(TSS_ADDR + 4, img.base + KERNEL_STACK_TOP)?;
    img.write(TSS_ADDR + 0x66, &0x68u16.to_le_bytes())?;
    Ok(())
}

fn write_idt(img: &mut Image<'_>) -> Result<(), KvmError> {
    for v in 0..IDT_ENTRIES {
        let handler = img.base
            + match v {
                6 => UD_HANDLER,
                32 => IRQ0_HANDLER,
                _ => FAULT_STUBS + v * FAULT_STUB_LEN,
            };
        let low = (handler & 0xffff)
            | u64::from(KERNEL_CS) << 16
            | 0x8e << 40 // present, DPL 0, 64-bit interrupt gate
            | ((handler >> 16) & 0xffff) << 48;
        img.write_u64(IDT_ADDR + v * 16, low)?;
        img.write_u64(IDT_ADDR + v * 16 + 8, handler >> 32)?;
    }
    Ok(())
}

/// The vCPU's system registers: long mode with paging on, at CPL3, TR and the
/// descriptor tables as [`load`] wrote them. `base` is the vCPU's own `KVM_GET_SREGS`
/// (kept: the APIC base and what this does not name).
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let seg = |selector: u16, type_: u8, dpl: u8, l: u8, db: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = seg(USER_CS, 0xb, 3, 1, 0);
    let data = seg(USER_DS, 0x3, 3, 0, 1);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: TSS_ADDR,
        limit: TSS_LIMIT,
        selector: TSS_SEL,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        type_: 0x2,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 7 * 8 - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = (IDT_ENTRIES * 16 - 1) as u16;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8005_0033; // PG, AM, WP, NE, ET, MP, PE
    sregs.efer = (1 << 8) | (1 << 10); // LME, LMA
    sregs
}

/// The dense page of working-set page `index` (where the loop writes counter values
/// congruent to `index` modulo the set).
pub fn working_set_page(index: u64) -> u64 {
    WORKING_SET_BASE / PAGE + index
}
