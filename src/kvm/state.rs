//! The vCPU state as it travels in a device-state frame: a versioned, little-endian
//! serialization of `kvm_regs` and `kvm_sregs`, field by field (no padding, no
//! in-memory layout of the bindings), and its decoder.
//!
//! Version 1, [`VCPU_STATE_LEN`] bytes:
//!
//! ```text
//! regs    rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags      18 x u64
//! sregs   cs ds es fs gs ss tr ldt, each: base u64, limit u32, selector u16,
//!         type present dpl db s l g avl unusable (u8 each)        8 x 23 bytes
//!         gdt idt, each: base u64, limit u16                       2 x 10 bytes
//!         cr0 cr2 cr3 cr4 cr8 efer apic_base                       7 x u64
//!         interrupt_bitmap                                         4 x u64
//! ```
//!
//! What a full VMM adds, each as its own item (its own id and version) or in a later
//! version of this one: the MSRs (`KVM_GET_MSRS`: TSC, TSC_AUX, kernel GS base,
//! STAR/LSTAR/CSTAR/SFMASK, SYSENTER, PAT, MTRRs, the APIC TSC deadline, kvmclock's
//! system time and wall clock), the FPU and the XSAVE area (`KVM_GET_XSAVE2`, several
//! KiB with AVX-512 or AMX: several items), the XCRs (`KVM_GET_XCRS`), the local APIC
//! (`KVM_GET_LAPIC`), pending exceptions, interrupts and NMIs (`KVM_GET_VCPU_EVENTS`),
//! the MP state, the debug registers, the in-kernel PIC/IOAPIC/PIT
//! (`KVM_GET_IRQCHIP`, `KVM_GET_PIT2`) and the VMM's own device models (serial,
//! virtio queues and their config space, block and net backends' in-flight requests).
//! This guest uses none of them: it runs with interrupts masked at CPL3, paced by
//! `ud2` exits the host answers.

use std::fmt;
#[allow(unused_imports)]
use std::prelude::rust_2021::*;

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

use super::vcpu::VcpuState;

/// The device-state id of vCPU 0's registers (vCPU *i* is `VCPU_STATE_ID + i`).
pub const VCPU_STATE_ID: u32 = 0x100;
/// The format version [`VcpuState::to_bytes`] writes and [`VcpuState::from_bytes`]
/// reads.
pub const VCPU_STATE_VERSION: u16 = 1;
/// Bytes of a version 1 vCPU state.
pub const VCPU_STATE_LEN: usize = 18 * 8 + 8 * SEGMENT_LEN + 2 * DTABLE_LEN + 11 * 8;

const SEGMENT_LEN: usize = 23;
const DTABLE_LEN: usize = 10;

/// Why received bytes are not a vCPU state this precopy can restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStateError {
    /// A format version this precopy does not read.
    UnknownVersion {
        /// The version received.
        version: u16,
    },
    /// The wrong number of bytes for the version.
    Length {
        /// Bytes received.
        got: usize,
        /// Bytes the version has.
        expected: usize,
    },
    /// The stream carried no state for this vCPU.
    Missing {
        /// The id looked for.
        id: u32,
    },
}

impl fmt::Display for VcpuStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VcpuStateError::UnknownVersion { version } => write!(
                f,
                "vCPU state format version {version} is unknown here (this precopy reads \
                 version {VCPU_STATE_VERSION}): upgrade the destination"
            ),
            VcpuStateError::Length { got, expected } => write!(
                f,
                "vCPU state of {got} bytes, version {VCPU_STATE_VERSION} has {expected}: \
                 the source wrote another format"
            ),
            VcpuStateError::Missing { id } => write!(
                f,
                "the migration carried no vCPU state (device-state id {id:#x}): the source \
                 did not send it"
            ),
        }
    }
}

impl std::error::Error for VcpuStateError {}

struct Writer(Vec<u8>);

impl Writer {
    fn put(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn segment(&mut self, s: &kvm_segment) {
        self.put(&s.base.to_le_bytes());
        self.put(&s.limit.to_le_bytes());
        self.put(&s.selector.to_le_bytes());
        self.put(&[
            s.type_, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable,
        ]);
    }
    fn dtable(&mut self, d: &kvm_dtable) {
        self.put(&d.base.to_le_bytes());
        self.put(&d.limit.to_le_bytes());
    }
}

/// Reads a blob whose length was checked: every read is in bounds.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        a
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn segment(&mut self) -> kvm_segment {
        let base = self.u64();
        let limit = u32::from_le_bytes(self.take());
        let selector = u16::from_le_bytes(self.take());
        let [type_, present, dpl, db, s, l, g, avl, unusable] = self.take();
        kvm_segment {
            base,
            limit,
            selector,
            type_,
            present,
            dpl,
            db,
            s,
            l,
            g,
            avl,
            unusable,
            padding: 0,
        }
    }
    fn dtable(&mut self) -> kvm_dtable {
        kvm_dtable {
            base: self.u64(),
            limit: u16::from_le_bytes(self.take()),
            padding: [0; 3],
        }
    }
}

impl VcpuState {
    /// The state as version [`VCPU_STATE_VERSION`] bytes ([`VCPU_STATE_LEN`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(VCPU_STATE_LEN));
        let r = &self.regs;
        for v in [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
        ] {
            w.put(&v.to_le_bytes());
        }
        let s = &self.sregs;
        for seg in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt] {
            w.segment(seg);
        }
        w.dtable(&s.gdt);
        w.dtable(&s.idt);
        for v in [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base] {
            w.put(&v.to_le_bytes());
        }
        for v in s.interrupt_bitmap {
            w.put(&v.to_le_bytes());
        }
        w.0
    }

    /// The state from `bytes` of format `version`: a version other than
    /// [`VCPU_STATE_VERSION`] or a length other than [`VCPU_STATE_LEN`] is refused.
    pub fn from_bytes(version: u16, bytes: &[u8]) -> Result<Self, VcpuStateError> {
        if version != VCPU_STATE_VERSION {
            return Err(VcpuStateError::UnknownVersion { version });
        }
        if bytes.len() != VCPU_STATE_LEN {
            return Err(VcpuStateError::Length {
                got: bytes.len(),
                expected: VCPU_STATE_LEN,
            });
        }
        let mut r = Reader(bytes);
        let mut g = [0u64; 18];
        g.iter_mut().for_each(|v| *v = r.u64());
        let regs = kvm_regs {
            rax: g[0],
            rbx: g[1],
            rcx: g[2],
            rdx: g[3],
            rsi: g[4],
            rdi: g[5],
            rsp: g[6],
            rbp: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: g[16],
            rflags: g[17],
        };
        let mut sregs = kvm_sregs::default();
        for seg in [
            &mut sregs.cs,
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.fs,
            &mut sregs.gs,
            &mut sregs.ss,
            &mut sregs.tr,
            &mut sregs.ldt,
        ] {
            *seg = r.segment();
        }
        sregs.gdt = r.dtable();
        sregs.idt = r.dtable();
        for v in [
            &mut sregs.cr0,
            &mut sregs.cr2,
            &mut sregs.cr3,
            &mut sregs.cr4,
            &mut sregs.cr8,
            &mut sregs.efer,
            &mut sregs.apic_base,
        ] {
            *v = r.u64();
        }
        for v in &mut sregs.interrupt_bitmap {
            *v = r.u64();
        }
        Ok(VcpuState { regs, sregs })
    }

    /// vCPU 0's state among the device-state items a migration carried.
    pub fn from_items(items: &[crate::engine::OwnedDeviceState]) -> Result<Self, VcpuStateError> {
        let item = items
            .iter()
            .find(|d| d.id == VCPU_STATE_ID)
            .ok_or(VcpuStateError::Missing { id: VCPU_STATE_ID })?;
        Self::from_bytes(item.version, &item.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VcpuState {
        let regs = kvm_regs {
            rax: 1,
            rbx: 0x1234_5678_9abc_def0,
            r15: u64::MAX,
            rip: 0x40_1000,
            rflags: 0x202,
            ..Default::default()
        };
        let cs = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x2b,
            type_: 11,
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let sregs = kvm_sregs {
            cs,
            tr: kvm_segment {
                base: 0x9000,
                ..Default::default()
            },
            ldt: kvm_segment {
                unusable: 1,
                ..Default::default()
            },
            gdt: kvm_dtable {
                base: 0x1000,
                limit: 0x3f,
                padding: [0; 3],
            },
            cr0: 0x8000_0011,
            cr3: 0x2000,
            cr4: 0x20,
            efer: 0x500,
            apic_base: 0xfee0_0900,
            interrupt_bitmap: [0, 0, 0, 1 << 63],
            ..Default::default()
        };
        VcpuState { regs, sregs }
    }

    fn same(a: &VcpuState, b: &VcpuState) -> bool {
        // The bindings' types compare by their bytes, padding zero on both sides.
        a.regs == b.regs && a.sregs == b.sregs
    }

    #[test]
    fn state_round_trips_in_its_documented_length() {
        let state = sample();
        let bytes = state.to_bytes();
        assert_eq!(bytes.len(), VCPU_STATE_LEN);
        assert_eq!(VCPU_STATE_LEN, 436);
        // rbx is the second register, little-endian.
        assert_eq!(bytes[8..16], 0x1234_5678_9abc_def0u64.to_le_bytes());
        let back = VcpuState::from_bytes(VCPU_STATE_VERSION, &bytes).unwrap();
        assert!(same(&state, &back));
    }

    #[test]
    fn wrong_version_short_and_long_blobs_are_refused() {
        let bytes = sample().to_bytes();
        assert_eq!(
            VcpuState::from_bytes(2, &bytes).unwrap_err(),
            VcpuStateError::UnknownVersion { version: 2 }
        );
        for len in [0, 1, VCPU_STATE_LEN - 1] {
            assert_eq!(
                VcpuState::from_bytes(VCPU_STATE_VERSION, &bytes[..len]).unwrap_err(),
                VcpuStateError::Length {
                    got: len,
                    expected: VCPU_STATE_LEN
                }
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(VcpuState::from_bytes(VCPU_STATE_VERSION, &long).is_err());
        assert_eq!(
            VcpuState::from_items(&[]).unwrap_err(),
            VcpuStateError::Missing { id: VCPU_STATE_ID }
        );
        assert!(VcpuStateError::UnknownVersion { version: 2 }
            .to_string()
            .contains("upgrade the destination"));
    }
}
