//! The published migrations this project comes from, as simulator scenarios: Hyper-V
//! live migration of Windows Server guests over 1 and 10 GbE (IBM/Intel, Windows
//! Server 2008 R2 SP1), and vMotion of a 16 GB Linux guest over 10 and 40 GbE
//! (Mellanox ConnectX-2, ESX 4.1).
//!
//! Neither publication gives the guests' write rates, their memory contents or the
//! downtime. The parameters below are chosen from what the publications describe,
//! written down with the reason, and fixed: they are not fitted to the published
//! figures. A sweep (`precopy sim sweep`) shows how a result moves over them.
//!
//! | parameter | value | why |
//! |---|---|---|
//! | guest size | 4, 8, 16, 32 GiB; 16 GiB | the publications' "GB" of VM memory (binary, as VM memory is configured) |
//! | Hyper-V idle | 1 GiB of data, the rest zero; 1000 page writes/s at random | "migrated just after the VMs had been started; CPU consumption was minimal, as was memory activity": a booted Windows Server's resident set, memory it never touched is zero |
//! | Hyper-V loaded | OLTP: a buffer pool of all memory but 512 MiB, a 256 MiB log taking 10% of the writes, Zipf 0.99, 25k page writes/s (100 MB/s) | "a simulated OLTP workload against SQL Server ... after all of the VMs' available memory had been allocated": SQL Server's buffer pool takes the memory; 100 MB/s of dirtied pages is a busy 4-vCPU database of the time |
//! | vMotion Once | every page written before the migration, no writes during it (`fill:rate=0`) | "all the VM's memory was allocated once ... read-only data loaded into memory and read very often" |
//! | vMotion Continuous | a sequential loop over all memory, 100k page writes/s (400 MB/s) | "all the VM's memory was allocated repeatedly (loop of dirtying the blocks memory continuously)", "real time received records written continuously": a loop doing work per record, a third of what 10 GbE carries |
//! | vMotion 40 GbE | a 27 Gb/s link | "bounded by the PCIe 2.0 bus speed limitation (~27Gbps)" |
//! | page contents | the codec benchmarks' mix (40% text, 25% structured, 20% mostly zero, 15% random) | the realistic mix every codec figure here uses |
//! | our side | 2 streams, 8 cores, the default policy (300 ms downtime limit), LZ4 auto, a 64 MiB delta cache, the fixed default CPU costs | our defaults; the hosts had 8 cores |

use std::format;
use std::string::String;
use std::vec::Vec;

use super::{Content, CpuModel, LinkModel, SimConfig};
use crate::workload::Workload;

/// What a publication measured for one migration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Published {
    /// Where it comes from.
    pub source: &'static str,
    /// Total migration time, seconds.
    pub total_s: f64,
    /// Bytes sent, where published.
    pub wire_bytes: Option<u64>,
    /// Average link rate, bits per second, where published.
    pub link_bits_per_sec: Option<f64>,
}

/// One published migration and the simulation of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Source, size, workload and link, e.g. `hyperv-16g-oltp-10gbe`.
    pub name: String,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// The guest's workload, chosen from the publication's description.
    pub workload: Workload,
    /// The link.
    pub link: LinkModel,
    /// What was published.
    pub published: Published,
    /// Whether the publication's implementation sent zero pages in full (Hyper-V of
    /// that time did): a row won on zero pages says so.
    pub peer_sent_zero_pages: bool,
}

const GIB: u64 = 1 << 30;
const HYPERV: &str = "IBM/Intel, Hyper-V live migration, Windows Server 2008 R2 SP1";
const VMOTION: &str = "Mellanox ConnectX-2, vMotion on ESX 4.1";

/// Every published migration, in the publications' order.
pub fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    // (GiB, idle 1 GbE, idle 10 GbE, loaded 1 GbE, loaded 10 GbE), seconds.
    let hyperv = [
        (4, 40.0, 8.8, 47.5, 15.6),
        (8, 84.0, 16.0, 93.0, 25.0),
        (16, 171.0, 35.0, 182.0, 54.0),
        (32, 351.0, 61.0, 362.0, 107.0),
    ];
    for (gib, idle1, idle10, load1, load10) in hyperv {
        let memory = gib * GIB;
        let idle = Workload::Idle {
            rate: 1000,
            zero: 1.0 - 1.0 / gib as f64,
        };
        let oltp = Workload::Oltp {
            rate: 25_000,
            pool: memory - 512 * (1 << 20),
            log: 256 << 20,
            skew: 0.99,
            log_share: 10,
        };
        for (kind, workload, rows) in [
            ("idle", idle, [(1, idle1), (10, idle10)]),
            ("oltp", oltp, [(1, load1), (10, load10)]),
        ] {
            for (gbe, total_s) in rows {
                out.push(Scenario {
                    name: format!("hyperv-{gib}g-{kind}-{gbe}gbe"),
                    memory_bytes: memory,
                    workload,
                    link: LinkModel::ethernet(gbe * 125_000_000),
                    published: Published {
                        source: HYPERV,
                        total_s,
                        wire_bytes: None,
                        link_bits_per_sec: None,
                    },
                    peer_sent_zero_pages: true,
                });
            }
        }
    }
    let once = Workload::Fill {
        rate: 0,
        set: u64::MAX,
    };
    let continuous = Workload::Continuous {
        rate: 100_000,
        set: u64::MAX,
    };
    // (workload, link name, link bytes/s, Gb/s, s, Gb).
    let vmotion = [
        ("once", once, "10gbe", 1_250_000_000, 8.78, 16.65, 145.45),
        ("once", once, "40gbe", 3_375_000_000, 19.87, 7.465, 145.17),
        (
            "continuous",
            continuous,
            "10gbe",
            1_250_000_000,
            8.43,
            38.93,
            328.58,
        ),
        (
            "continuous",
            continuous,
            "40gbe",
            3_375_000_000,
            17.67,
            10.44,
            179.15,
        ),
    ];
    for (kind, workload, link, rate, gbps, total_s, gb) in vmotion {
        out.push(Scenario {
            name: format!("vmotion-16g-{kind}-{link}"),
            memory_bytes: 16 * GIB,
            workload,
            link: LinkModel::ethernet(rate),
            published: Published {
                source: VMOTION,
                total_s,
                wire_bytes: Some((gb * 1e9 / 8.0) as u64),
                link_bits_per_sec: Some(gbps * 1e9),
            },
            peer_sent_zero_pages: false,
        });
    }
    out
}

/// The scenarios `name` selects: one by its name, or `all`.
pub fn select(name: &str) -> Result<Vec<Scenario>, String> {
    let all = scenarios();
    if name == "all" {
        return Ok(all);
    }
    let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    let picked: Vec<Scenario> = all.into_iter().filter(|s| s.name == name).collect();
    if picked.is_empty() {
        return Err(format!(
            "unknown scenario '{name}' (all, or one of: {})",
            names.join(", ")
        ));
    }
    Ok(picked)
}

impl Scenario {
    /// The simulation of this scenario with `cpu`'s costs (our side's defaults
    /// otherwise, see the module docs).
    pub fn config(&self, cpu: CpuModel) -> SimConfig {
        let mut c = SimConfig::new(self.memory_bytes, self.workload, self.link);
        c.cpu = cpu;
        c.content = Content::Mix;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_row_is_there_once() {
        let all = scenarios();
        assert_eq!(all.len(), 20);
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 20);
        let row = select("hyperv-16g-oltp-10gbe").unwrap();
        assert_eq!(row[0].published.total_s, 54.0);
        assert_eq!(row[0].memory_bytes, 16 << 30);
        let v = select("vmotion-16g-continuous-10gbe").unwrap();
        assert_eq!(v[0].published.wire_bytes, Some(41_072_500_000));
        assert!(select("hyperv-3g-idle-1gbe")
            .unwrap_err()
            .contains("vmotion-16g-once-40gbe"));
    }
}
