//! The machine a run was measured on, recorded with every report so numbers from two
//! runs are only compared knowingly.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What the report says about the machine and the build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs listed in /proc/cpuinfo.
    pub logical_cpus: usize,
    /// CPUs this process may run on.
    pub available_cpus: usize,
    /// `uname -srv` equivalent: kernel name, release and version.
    pub kernel: String,
    /// `uname -m` equivalent.
    pub arch: String,
    /// MemTotal from /proc/meminfo, bytes.
    pub memory_bytes: u64,
    /// 1-, 5- and 15-minute load averages when the run started (others share the machine).
    pub loadavg: [f64; 3],
    /// Hostname.
    pub hostname: String,
    /// `rustc --version` of the compiler that built loadtest.
    pub rustc: String,
    /// Cargo profile loadtest was built with (numbers from a debug build are meaningless).
    pub build_profile: String,
    /// loadtest's version.
    pub loadtest_version: String,
    /// `git rev-parse HEAD` of the work tree, when there is one.
    pub git_commit: Option<String>,
}

impl MachineInfo {
    /// Collects the information; anything unreadable is recorded as "unknown".
    pub fn collect() -> MachineInfo {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let trimmed = |p: &str| read(p).trim().to_owned();
        MachineInfo {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
            logical_cpus: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            available_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            kernel: format!(
                "{} {} {}",
                trimmed("/proc/sys/kernel/ostype"),
                trimmed("/proc/sys/kernel/osrelease"),
                trimmed("/proc/sys/kernel/version")
            ),
            arch: std::env::consts::ARCH.to_owned(),
            memory_bytes: mem_total(&meminfo).unwrap_or(0),
            loadavg: loadavg(&read("/proc/loadavg")),
            hostname: trimmed("/proc/sys/kernel/hostname"),
            rustc: env!("LOADTEST_RUSTC_VERSION").to_owned(),
            build_profile: env!("LOADTEST_BUILD_PROFILE").to_owned(),
            loadtest_version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: git_commit(),
        }
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first `model name` line of /proc/cpuinfo (x86) or `Model`/`CPU part` elsewhere.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "cpu model", "CPU part"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key).then(|| v.trim().to_owned())
            })
        })
}

/// MemTotal of /proc/meminfo in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn loadavg(s: &str) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (o, v) in out.iter_mut().zip(s.split_whitespace()) {
        *o = v.parse().unwrap_or(0.0);
    }
    out
}

/// The commit checked out in the current directory, else in loadtest's source tree.
/// `rev-parse` only reads the repository.
fn git_commit() -> Option<String> {
    let here = std::env::current_dir().ok();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    here.into_iter().chain([src]).find_map(|dir| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !s.is_empty()).then_some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_meminfo() {
        let cpu = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 3.0GHz\n";
        assert_eq!(cpu_model(cpu).as_deref(), Some("Example CPU @ 3.0GHz"));
        assert_eq!(
            mem_total("MemTotal:       1000 kB\nMemFree: 1 kB\n"),
            Some(1_024_000)
        );
        assert_eq!(mem_total("garbage"), None);
        assert_eq!(loadavg("0.50 1.00 2.5 1/2 3"), [0.5, 1.0, 2.5]);
    }

    #[test]
    fn collects_this_machine() {
        let m = MachineInfo::collect();
        assert!(m.logical_cpus >= 1);
        assert!(m.memory_bytes > 0);
        assert!(m.rustc.starts_with("rustc "), "{}", m.rustc);
        assert!(m.kernel.starts_with("Linux"), "{}", m.kernel);
    }
}
