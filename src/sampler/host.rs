//! Reading the host and perfd itself with sysinfo, refreshing only what is read: CPU (all and
//! per core), load, memory and swap, real disks (and whatever file system holds the data
//! directory, real or not: an overlay in a container, a tmpfs), network throughput since the last
//! reading, perfd's CPU, RSS, threads and open file descriptors.

use crate::error::Result;
use crate::model::now_ms;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// File systems that are not real disks.
const VIRTUAL_FS: [&str; 10] =
    ["tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "ramfs", "efivarfs"];

/// One file system, in df's terms: `used_percent` is used / (used + available), so the blocks
/// reserved for root (or hidden by a quota) count neither as used nor as room, and the figure
/// is the `Use%` an operator sees in `df`; it reaches 100 exactly when perfd can write no more.
#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    pub mount: String,
    pub used_bytes: u64,
    /// What an unprivileged process may still write.
    pub available_bytes: u64,
    pub total_bytes: u64,
    pub used_percent: f64,
    /// This file system holds perfd's data directory.
    pub data_dir: bool,
}

/// The latest reading of the host and of perfd itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceSnapshot {
    pub at_ms: i64,
    pub cpu_percent: f64,
    pub cpu_per_core_percent: Vec<f64>,
    pub load_average: [f64; 3],
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_percent: f64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub disks: Vec<DiskUsage>,
    pub network_rx_bytes_per_sec: f64,
    pub network_tx_bytes_per_sec: f64,
    pub process_cpu_percent: f64,
    pub process_rss_bytes: u64,
    pub process_threads: u64,
    pub process_open_fds: u64,
    pub cgroup_memory_limit_bytes: Option<u64>,
}

/// The sysinfo handles, kept between readings (CPU and network figures are deltas).
pub(super) struct Host {
    sys: System,
    disks: Disks,
    networks: Networks,
    pid: Option<Pid>,
    last_tick: Instant,
    /// Canonical, so it can be matched against mount points.
    data_dir: PathBuf,
}

impl Host {
    pub(super) fn new(data_dir: &Path) -> Result<Host> {
        let err = |e: sysinfo::Error| crate::Error::Internal(format!("sysinfo: {e}"));
        Ok(Host {
            sys: System::new().map_err(err)?,
            disks: Disks::new_with_refreshed_list().map_err(err)?,
            networks: Networks::new_with_refreshed_list().map_err(err)?,
            pid: sysinfo::get_current_pid().ok(),
            last_tick: Instant::now(),
            data_dir: data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf()),
        })
    }

    pub(super) fn read(&mut self) -> ResourceSnapshot {
        let elapsed = self.last_tick.elapsed().as_secs_f64().max(0.001);
        self.last_tick = Instant::now();
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let mut s = ResourceSnapshot {
            at_ms: now_ms(),
            cpu_percent: self.sys.global_cpu_usage() as f64,
            cpu_per_core_percent: self.sys.cpus().iter().map(|c| c.usage() as f64).collect(),
            memory_total_bytes: self.sys.total_memory(),
            memory_used_bytes: self.sys.used_memory(),
            swap_total_bytes: self.sys.total_swap(),
            swap_used_bytes: self.sys.used_swap(),
            cgroup_memory_limit_bytes: self.sys.cgroup_limits().map(|c| c.total_memory),
            ..ResourceSnapshot::default()
        };
        s.memory_percent = percent(s.memory_used_bytes, s.memory_total_bytes);
        if let Ok(l) = System::load_average() {
            s.load_average = [l.one, l.five, l.fifteen];
        }
        // sysinfo lists real disks only; the data dir's file system is read directly.
        let data = data_dir_usage(&self.data_dir);
        for d in self.disks.iter() {
            let fs = d.file_system().to_string_lossy();
            let mount = d.mount_point().display().to_string();
            let listed = data.as_ref().is_some_and(|u| u.mount == mount);
            if d.total_space() == 0 || VIRTUAL_FS.contains(&fs.as_ref()) || listed {
                continue;
            }
            // statvfs tells free from available; sysinfo's figures are the fallback.
            let space = rustix::fs::statvfs(d.mount_point()).ok().map_or_else(
                || Space::from_sysinfo(d.total_space(), d.available_space()),
                |st| Space::from_statvfs(&st),
            );
            s.disks.push(usage(mount, space, false));
        }
        s.disks.extend(data);
        let (rx, tx) =
            self.networks.values().fold((0, 0), |(r, t), n| (r + n.received(), t + n.transmitted()));
        s.network_rx_bytes_per_sec = rx as f64 / elapsed;
        s.network_tx_bytes_per_sec = tx as f64 / elapsed;
        if let Some(pid) = self.pid {
            let kind = ProcessRefreshKind::nothing().with_cpu().with_memory().with_tasks();
            self.sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, kind);
            if let Some(p) = self.sys.process(pid) {
                s.process_cpu_percent = p.cpu_usage() as f64;
                s.process_rss_bytes = p.memory();
                s.process_threads = p.tasks().map_or(0, |t| t.len() as u64);
            }
        }
        s.process_open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        s
    }
}

pub(super) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

/// A file system's size, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Space {
    total: u64,
    /// Not in use, the reserved blocks included.
    free: u64,
    /// Free to an unprivileged process.
    available: u64,
}

impl Space {
    fn from_statvfs(st: &rustix::fs::StatVfs) -> Space {
        let unit = st.f_frsize;
        Space {
            total: st.f_blocks.saturating_mul(unit),
            free: st.f_bfree.saturating_mul(unit),
            available: st.f_bavail.saturating_mul(unit),
        }
    }

    /// sysinfo does not tell free from available: reserved blocks then count as used.
    fn from_sysinfo(total: u64, available: u64) -> Space {
        Space { total, free: available, available }
    }
}

/// df's arithmetic: used = total − free, and `Use%` = used / (used + available).
fn usage(mount: String, space: Space, data_dir: bool) -> DiskUsage {
    let used = space.total.saturating_sub(space.free);
    let available = space.available.min(space.total - used);
    DiskUsage {
        mount,
        used_bytes: used,
        available_bytes: available,
        total_bytes: space.total,
        used_percent: percent(used, used + available),
        data_dir,
    }
}

/// The file system holding `dir` (statvfs), named by its mount point (`/proc/self/mounts`).
fn data_dir_usage(dir: &Path) -> Option<DiskUsage> {
    let st = rustix::fs::statvfs(dir).ok()?;
    if st.f_blocks == 0 {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    // Fields are space-separated; a space inside a mount point is written `\040`.
    let points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .collect();
    let mount = holding_mount(points.iter().map(PathBuf::as_path), dir).unwrap_or(dir);
    Some(usage(mount.display().to_string(), Space::from_statvfs(&st), true))
}

/// The mount point among `mounts` that holds `dir`: the longest one that is a prefix of it.
fn holding_mount<'a>(mounts: impl Iterator<Item = &'a Path>, dir: &Path) -> Option<&'a Path> {
    mounts.filter(|m| dir.starts_with(m)).max_by_key(|m| m.components().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_held_by_the_longest_matching_mount() {
        let mounts = [Path::new("/"), Path::new("/mnt/tiny"), Path::new("/mnt/tin"), Path::new("/boot")];
        let pick = |dir: &str| holding_mount(mounts.iter().copied(), Path::new(dir));
        assert_eq!(pick("/mnt/tiny/d"), Some(Path::new("/mnt/tiny")));
        assert_eq!(pick("/mnt/tinyx/d"), Some(Path::new("/")), "whole components only");
        assert_eq!(pick("/var/lib/perfd"), Some(Path::new("/")));
        assert_eq!(holding_mount([Path::new("/boot")].into_iter(), Path::new("/var")), None);
    }

    #[test]
    fn reserved_blocks_count_neither_as_used_nor_as_room() {
        // 100 blocks, 30 free of which 5 are reserved for root: df says 70 used, 25 available, 74%.
        let d = usage("/".into(), Space { total: 100, free: 30, available: 25 }, false);
        assert_eq!((d.used_bytes, d.available_bytes, d.total_bytes), (70, 25, 100));
        assert!((d.used_percent - 100.0 * 70.0 / 95.0).abs() < 1e-9, "{}", d.used_percent);
        let full = usage("/".into(), Space { total: 100, free: 5, available: 0 }, false);
        assert_eq!(full.used_percent, 100.0, "nothing left to write is 100 %, reserve or not");
        let fallback = usage("/".into(), Space::from_sysinfo(100, 25), false);
        assert_eq!((fallback.used_bytes, fallback.used_percent), (75, 75.0));
        let odd = usage("/".into(), Space { total: 100, free: 10, available: 40 }, false);
        assert_eq!(odd.available_bytes, 10, "available never exceeds what is not used");
    }

    #[test]
    fn the_data_dirs_figure_is_the_one_df_prints() {
        let dir = std::env::temp_dir();
        let d = data_dir_usage(&dir).expect("statvfs of the temp dir");
        let out = std::process::Command::new("df").arg("--output=pcent").arg(&dir).output().expect("df runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let df: f64 =
            text.lines().nth(1).and_then(|l| l.trim().trim_end_matches('%').parse().ok()).expect(&text);
        // df rounds up; other processes write meanwhile, so a point of slack.
        assert!(
            d.used_percent <= df + 1.0 && d.used_percent > df - 2.0,
            "perfd {} %, df {df} %",
            d.used_percent
        );
    }
}
