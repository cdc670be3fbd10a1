//! CPU and memory of the system under load, from `/proc`: each named process with its whole
//! tree (PostgreSQL's backends, a launcher's child), sampled at load start and after the
//! drain, and the machine's CPU over the same window so a reader sees what share the listed
//! processes account for.
//!
//! Parsing is kept pure (`parse_*` take text or bytes) so it is tested without a live `/proc`.

use crate::stats::per_order;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::str::FromStr;

/// `--procs` entry: a component name and the pid at the root of its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    pub name: String,
    pub pid: u32,
}

impl FromStr for ProcSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s.split_once('=').ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
        let pid = pid.trim().parse().map_err(|_| format!("{name}: {pid:?} is not a pid"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("no name before the pid in {s:?}"));
        }
        Ok(ProcSpec { name: name.to_owned(), pid })
    }
}

/// `--procs NAME=PID,NAME=PID,...`; empty items (and an empty value) are allowed, so a caller
/// with nothing to list can still pass the option.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcList(pub Vec<ProcSpec>);

impl FromStr for ProcList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect::<Result<_, _>>().map(ProcList)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed /proc stat line: {0}")]
pub struct StatError(&'static str);

/// The fields of `/proc/<pid>/stat` this module needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// User + system time of the process itself, in clock ticks.
    pub own_ticks: u64,
    /// User + system time of its children that it has waited for (reaped), in clock ticks:
    /// without them, short-lived workers would vanish from the account.
    pub reaped_children_ticks: u64,
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so the fields are counted from the *last* `)`.
pub fn parse_stat(line: &str) -> Result<Stat, StatError> {
    let close = line.rfind(')').ok_or(StatError("no ')' after the command name"))?;
    // Fields 3.. (state, ppid, ...): index 0 here is field 3 of proc(5).
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, StatError> {
        rest.get(n - 3).ok_or(StatError("too few fields"))?.parse::<u64>().map_err(|_| StatError("not a number"))
    };
    let ppid = u32::try_from(field(4)?).map_err(|_| StatError("ppid out of range"))?;
    // proc(5): utime 14, stime 15, cutime 16, cstime 17 (the child times are signed there,
    // but never negative in practice).
    Ok(Stat { ppid, own_ticks: field(14)? + field(15)?, reaped_children_ticks: field(16)? + field(17)? })
}

/// `VmRSS` of a `/proc/<pid>/status` text, in kB.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    kb_field(status, "VmRSS:")
}

/// `Pss` of a `/proc/<pid>/smaps_rollup` text, in kB.
pub fn parse_pss_kb(smaps_rollup: &str) -> Option<u64> {
    kb_field(smaps_rollup, "Pss:")
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`). The kernel hands the value to every
/// process in its auxiliary vector (`AT_CLKTCK`), which `/proc/self/auxv` shows: reading it
/// there needs no `unsafe` call into libc. 100 (the value on every mainstream Linux build) if
/// it cannot be read.
pub fn clock_ticks_per_second() -> u64 {
    fs::read("/proc/self/auxv").ok().and_then(|b| parse_auxv_clk_tck(&b)).unwrap_or(100)
}

/// `AT_CLKTCK` from an auxiliary vector: native-endian (key, value) pairs of machine words,
/// ended by `AT_NULL`.
pub fn parse_auxv_clk_tck(auxv: &[u8]) -> Option<u64> {
    const AT_NULL: u64 = 0;
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |chunk: &[u8]| -> u64 {
        let mut buf = [0u8; WORD];
        buf.copy_from_slice(chunk);
        usize::from_ne_bytes(buf) as u64
    };
    for pair in auxv.chunks_exact(2 * WORD) {
        match word(&pair[..WORD]) {
            AT_NULL => return None,
            AT_CLKTCK => return Some(word(&pair[WORD..])).filter(|t| *t > 0),
            _ => {}
        }
    }
    None
}

/// Every live process's parent, from one pass over `/proc/*/stat`.
fn parents() -> HashMap<u32, u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&stat).ok()?.ppid))
        })
        .collect()
}

/// `root` and all its descendants, root first.
pub fn tree(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid) in parents {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            let mut kids = kids.clone();
            kids.sort_unstable();
            out.extend(kids.into_iter().filter(|k| *k != root));
        }
        i += 1;
    }
    out
}

/// One process tree at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSample {
    pub processes: usize,
    pub cpu_ticks: u64,
    pub rss_kb: u64,
    /// Proportional set size: shared pages (PostgreSQL's buffers, JVM libraries) counted once
    /// over all processes that map them, unlike RSS. None where smaps_rollup is unreadable.
    pub pss_kb: Option<u64>,
    /// CPU of the JVM's JIT compiler threads ([`is_jit_compiler`]) alive in the tree, in clock
    /// ticks: a JVM compiles its hot paths for minutes after its start, and that work is part
    /// of `cpu_ticks` without being the load's. None when the tree has no such thread.
    pub jit_ticks: Option<u64>,
}

/// None when `root` is gone. Members that vanish mid-read are skipped.
fn sample_tree(root: u32, parents: &HashMap<u32, u32>) -> Option<TreeSample> {
    let root_stat = fs::read_to_string(format!("/proc/{root}/stat")).ok()?;
    parse_stat(&root_stat).ok()?;
    let mut s = TreeSample { processes: 0, cpu_ticks: 0, rss_kb: 0, pss_kb: Some(0), jit_ticks: None };
    for pid in tree(root, parents) {
        let Some(stat) = fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_stat(&t).ok()) else {
            continue;
        };
        s.processes += 1;
        s.cpu_ticks += stat.own_ticks + stat.reaped_children_ticks;
        s.rss_kb +=
            fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|t| parse_vm_rss_kb(&t)).unwrap_or(0);
        let pss = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok().and_then(|t| parse_pss_kb(&t));
        s.pss_kb = s.pss_kb.zip(pss).map(|(a, b)| a + b);
        if let Some(jit) = jit_ticks(pid) {
            s.jit_ticks = Some(s.jit_ticks.unwrap_or(0) + jit);
        }
    }
    Some(s)
}

/// The CPU of `pid`'s JIT compiler threads, if it has any (a JVM).
fn jit_ticks(pid: u32) -> Option<u64> {
    let dir = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ticks = None;
    for task in dir.filter_map(Result::ok) {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
        if thread_name(&stat).is_some_and(is_jit_compiler)
            && let Ok(t) = parse_stat(&stat)
        {
            ticks = Some(ticks.unwrap_or(0) + t.own_ticks);
        }
    }
    ticks
}

/// The command name of a `/proc/.../stat` line: between the first `(` and the last `)`.
pub fn thread_name(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close)
}

/// HotSpot's JIT compiler threads, `C1 CompilerThread<n>` and `C2 CompilerThread<n>` (the
/// kernel keeps 15 bytes of a thread's name). HotSpot also ends idle compiler threads, and the
/// CPU of one that ended is not counted here: the figure is a lower bound.
pub fn is_jit_compiler(name: &str) -> bool {
    name.starts_with("C1 CompilerThre") || name.starts_with("C2 CompilerThre")
}

/// The machine's CPU time from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineTicks {
    pub busy: u64,
    pub idle: u64,
    pub cores: usize,
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice` (guest time is
/// already inside user, so it is not added again). Idle includes iowait.
pub fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let first = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = first.split_whitespace().skip(1).map(|n| n.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let cores =
        text.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    Some(MachineTicks { busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7), idle: at(3) + at(4), cores })
}

/// Everything sampled at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub components: BTreeMap<String, (u32, Option<TreeSample>)>,
    pub machine: Option<MachineTicks>,
    /// This process (the load generator), so its own share is visible.
    pub client: Option<TreeSample>,
}

pub fn snapshot(specs: &[ProcSpec]) -> Snapshot {
    let parents = parents();
    let components = specs.iter().map(|s| (s.name.clone(), (s.pid, sample_tree(s.pid, &parents)))).collect();
    let machine = fs::read_to_string("/proc/stat").ok().and_then(|t| parse_proc_stat(&t));
    Snapshot { components, machine, client: sample_tree(std::process::id(), &parents) }
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    pub pid: u32,
    /// Processes in the tree at the start and at the end.
    pub processes_start: Option<usize>,
    pub processes_end: Option<usize>,
    /// CPU time (user + system) spent in the window by the tree; null when the root vanished.
    pub cpu_ms: Option<f64>,
    pub cpu_ms_per_order: Option<f64>,
    /// Of `cpu_ms`, at least this much was the JVM compiling its code (see [`TreeSample`]);
    /// null for a process that is not a JVM. High in a stack just started.
    pub jit_cpu_ms: Option<f64>,
    pub rss_mb_start: Option<f64>,
    pub rss_mb_end: Option<f64>,
    /// RSS once the run is over and the stack has been idle a while ([`add_idle`]): what a
    /// process keeps, as opposed to what it held at the end of the load.
    pub rss_mb_idle: Option<f64>,
    pub pss_mb_start: Option<f64>,
    pub pss_mb_end: Option<f64>,
    /// True when the root process was gone at the end (or already at the start).
    pub vanished: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessesReport {
    pub clock_ticks_per_s: u64,
    pub components: BTreeMap<String, ComponentReport>,
    /// Sums over the components that could be read at both ends.
    pub total: TotalReport,
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct TotalReport {
    pub cpu_ms: f64,
    pub cpu_ms_per_order: Option<f64>,
    /// RSS counts pages shared between processes once per process (PostgreSQL's shared
    /// buffers in every backend): PSS is the better total where it is known.
    pub rss_mb_start: f64,
    pub rss_mb_end: f64,
    /// Sum of the components' `rss_mb_idle`, and how long after the audit (or the drain) it was
    /// sampled.
    pub rss_mb_idle: Option<f64>,
    pub idle_after_s: Option<f64>,
    pub pss_mb_start: Option<f64>,
    pub pss_mb_end: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineCpuReport {
    pub cores: usize,
    pub window_s: f64,
    pub busy_ms: f64,
    pub idle_ms: f64,
    /// busy / (busy + idle).
    pub busy_share: Option<f64>,
    /// CPU of the listed components / the machine's busy time; null without `--procs`.
    pub listed_share_of_busy: Option<f64>,
    /// The load generator's own CPU / the machine's busy time.
    pub client_share_of_busy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    pub cpu_ms: Option<f64>,
    pub cpu_ms_per_order: Option<f64>,
    pub rss_mb_end: Option<f64>,
}

fn ms(ticks: u64, hz: u64) -> f64 {
    ticks as f64 * 1000.0 / hz as f64
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The differences between two snapshots; `orders` (accepted) divides the CPU.
pub fn compare(
    start: &Snapshot,
    end: &Snapshot,
    hz: u64,
    orders: u64,
    window_s: f64,
) -> (Option<ProcessesReport>, Option<MachineCpuReport>, ClientReport) {
    let mut components = BTreeMap::new();
    let mut total = TotalReport {
        cpu_ms: 0.0,
        cpu_ms_per_order: None,
        rss_mb_start: 0.0,
        rss_mb_end: 0.0,
        rss_mb_idle: None,
        idle_after_s: None,
        pss_mb_start: Some(0.0),
        pss_mb_end: Some(0.0),
    };
    for (name, (pid, first)) in &start.components {
        let last = end.components.get(name).and_then(|(_, s)| *s);
        let cpu_ms = first.zip(last).map(|(a, b)| ms(b.cpu_ticks.saturating_sub(a.cpu_ticks), hz));
        let jit_cpu_ms = last
            .and_then(|b| b.jit_ticks)
            .map(|b| ms(b.saturating_sub(first.and_then(|a| a.jit_ticks).unwrap_or(0)), hz));
        if let (Some(c), Some(a), Some(b)) = (cpu_ms, first, last) {
            total.cpu_ms += c;
            total.rss_mb_start += mb(a.rss_kb);
            total.rss_mb_end += mb(b.rss_kb);
            total.pss_mb_start = total.pss_mb_start.zip(a.pss_kb).map(|(t, p)| t + mb(p));
            total.pss_mb_end = total.pss_mb_end.zip(b.pss_kb).map(|(t, p)| t + mb(p));
        }
        components.insert(
            name.clone(),
            ComponentReport {
                pid: *pid,
                processes_start: first.map(|s| s.processes),
                processes_end: last.map(|s| s.processes),
                cpu_ms,
                cpu_ms_per_order: cpu_ms.and_then(|c| per_order(c, orders)),
                jit_cpu_ms,
                rss_mb_start: first.map(|s| mb(s.rss_kb)),
                rss_mb_end: last.map(|s| mb(s.rss_kb)),
                rss_mb_idle: None,
                pss_mb_start: first.and_then(|s| s.pss_kb).map(mb),
                pss_mb_end: last.and_then(|s| s.pss_kb).map(mb),
                vanished: first.is_none() || last.is_none(),
            },
        );
    }
    total.cpu_ms_per_order = per_order(total.cpu_ms, orders);
    let client_cpu = start.client.zip(end.client).map(|(a, b)| ms(b.cpu_ticks.saturating_sub(a.cpu_ticks), hz));
    let client = ClientReport {
        cpu_ms: client_cpu,
        cpu_ms_per_order: client_cpu.and_then(|c| per_order(c, orders)),
        rss_mb_end: end.client.map(|s| mb(s.rss_kb)),
    };
    let machine = start.machine.zip(end.machine).map(|(a, b)| {
        let busy = ms(b.busy.saturating_sub(a.busy), hz);
        let idle = ms(b.idle.saturating_sub(a.idle), hz);
        let share = |x: f64| (busy > 0.0).then(|| x / busy);
        MachineCpuReport {
            cores: b.cores,
            window_s,
            busy_ms: busy,
            idle_ms: idle,
            busy_share: (busy + idle > 0.0).then(|| busy / (busy + idle)),
            listed_share_of_busy: if components.is_empty() { None } else { share(total.cpu_ms) },
            client_share_of_busy: client_cpu.and_then(share),
        }
    });
    let processes = if components.is_empty() {
        None
    } else {
        Some(ProcessesReport {
            clock_ticks_per_s: hz,
            components,
            total,
            note: "cpu_ms: user+system time of each tree (live processes plus the children they reaped) between \
               load start and the end of the drain; rss sums VmRSS over the tree (shared pages counted in each \
               process), pss counts them once",
        })
    };
    (processes, machine, client)
}

/// Add the RSS of a snapshot taken `after_s` seconds after the run's end, once the stack idled.
pub fn add_idle(report: &mut ProcessesReport, idle: &Snapshot, after_s: f64) {
    let mut total = 0.0;
    for (name, component) in &mut report.components {
        component.rss_mb_idle = idle.components.get(name).and_then(|(_, s)| *s).map(|s| mb(s.rss_kb));
        total += component.rss_mb_idle.unwrap_or_default();
    }
    report.total.rss_mb_idle = Some(total);
    report.total.idle_after_s = Some(after_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line's shape, with a command name that holds spaces and parentheses.
    const STAT: &str = "4242 (my (weird) proc) S 17 4242 4242 0 -1 4194560 2131 0 12 0 \
                        350 125 40 2 20 0 9 0 123456 987654321 4321 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.ppid, 17);
        assert_eq!(s.own_ticks, 350 + 125);
        assert_eq!(s.reaped_children_ticks, 40 + 2);
    }

    #[test]
    fn a_name_ending_in_a_parenthesis_and_a_space_does_not_shift_the_fields() {
        let line = STAT.replace("(my (weird) proc)", "(x) R 1 (y) )");
        assert_eq!(parse_stat(&line).unwrap().ppid, 17);
    }

    #[test]
    fn the_jvms_compiler_threads_are_told_by_their_names() {
        let thread = STAT.replace("(my (weird) proc)", "(C2 CompilerThre)");
        assert_eq!(thread_name(&thread), Some("C2 CompilerThre"));
        assert_eq!(thread_name(STAT), Some("my (weird) proc"));
        assert!(is_jit_compiler("C2 CompilerThre"));
        assert!(is_jit_compiler("C1 CompilerThre"));
        for other in ["java", "GC Thread#0", "VM Thread", "data-plane-kafk", "postgres", "CompilerThread"] {
            assert!(!is_jit_compiler(other), "{other}");
        }
        assert_eq!(thread_name("4242 no parens here"), None);
    }

    #[test]
    fn truncated_or_garbled_stat_lines_are_errors() {
        assert!(parse_stat("4242 no parens here").is_err());
        assert!(parse_stat("4242 (x) S 1 2 3").is_err());
        assert!(parse_stat(&STAT.replace(" 350 ", " abc ")).is_err());
    }

    #[test]
    fn rss_and_pss_are_read_in_kilobytes() {
        let status = "Name:\tpostgres\nVmPeak:\t  300000 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kb(status), Some(12345));
        assert_eq!(parse_vm_rss_kb("Name:\tkthreadd\n"), None, "kernel threads have no VmRSS");
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1024 kB\nPss_Anon: 10 kB\n";
        assert_eq!(parse_pss_kb(rollup), Some(1024));
    }

    #[test]
    fn clock_ticks_come_from_the_auxiliary_vector() {
        let words = |pairs: &[(usize, usize)]| -> Vec<u8> {
            pairs.iter().flat_map(|(k, v)| k.to_ne_bytes().into_iter().chain(v.to_ne_bytes())).collect()
        };
        assert_eq!(parse_auxv_clk_tck(&words(&[(6, 4096), (17, 250), (0, 0)])), Some(250));
        assert_eq!(parse_auxv_clk_tck(&words(&[(6, 4096), (0, 0), (17, 250)])), None, "nothing after AT_NULL");
        assert_eq!(parse_auxv_clk_tck(&[]), None);
        let hz = clock_ticks_per_second();
        assert!((1..=10_000).contains(&hz), "{hz}");
    }

    #[test]
    fn a_tree_holds_the_root_and_all_its_descendants_only() {
        let parents: HashMap<u32, u32> = [(1, 0), (10, 1), (11, 10), (12, 10), (13, 12), (20, 1), (21, 20)].into();
        assert_eq!(tree(10, &parents), [10, 11, 12, 13]);
        assert_eq!(tree(21, &parents), [21]);
        assert_eq!(tree(99, &parents), [99], "an unknown root is its own tree; sampling reports it vanished");
    }

    #[test]
    fn machine_cpu_counts_iowait_as_idle_and_steal_as_busy() {
        let text = "cpu  100 5 50 1000 20 3 2 7 30 0\ncpu0 50 2 25 500 10 1 1 3 15 0\ncpu1 50 3 25 500 10 2 1 4 15 0\nintr 1\n";
        let m = parse_proc_stat(text).unwrap();
        assert_eq!(m.busy, 100 + 5 + 50 + 3 + 2 + 7);
        assert_eq!(m.idle, 1000 + 20);
        assert_eq!(m.cores, 2);
    }

    #[test]
    fn comparing_snapshots_gives_deltas_shares_and_vanished_roots() {
        let tree =
            |cpu, rss| Some(TreeSample { processes: 2, cpu_ticks: cpu, rss_kb: rss, pss_kb: None, jit_ticks: None });
        let jvm = |cpu, jit| Some(TreeSample { jit_ticks: Some(jit), ..tree(cpu, 1024).unwrap() });
        let start = Snapshot {
            components: [
                ("a".to_owned(), (1, tree(100, 2048))),
                ("gone".to_owned(), (2, tree(5, 1024))),
                ("jvm".to_owned(), (3, jvm(50, 40))),
            ]
            .into(),
            machine: Some(MachineTicks { busy: 1000, idle: 1000, cores: 2 }),
            client: tree(10, 1024),
        };
        let end = Snapshot {
            components: [
                ("a".to_owned(), (1, tree(300, 4096))),
                ("gone".to_owned(), (2, None)),
                ("jvm".to_owned(), (3, jvm(150, 65))),
            ]
            .into(),
            machine: Some(MachineTicks { busy: 1400, idle: 1600, cores: 2 }),
            client: tree(30, 1024),
        };
        let (procs, machine, client) = compare(&start, &end, 100, 10, 10.0);
        let procs = procs.unwrap();
        let a = &procs.components["a"];
        assert_eq!(a.cpu_ms, Some(2000.0));
        assert_eq!(a.cpu_ms_per_order, Some(200.0));
        assert_eq!((a.rss_mb_start, a.rss_mb_end), (Some(2.0), Some(4.0)));
        assert!(!a.vanished);
        assert_eq!(a.jit_cpu_ms, None, "not a JVM");
        assert!(procs.components["gone"].vanished);
        assert_eq!(procs.components["gone"].cpu_ms, None);
        // The JVM's compiler threads: 25 of its 100 ticks.
        assert_eq!(procs.components["jvm"].cpu_ms, Some(1000.0));
        assert_eq!(procs.components["jvm"].jit_cpu_ms, Some(250.0));
        assert_eq!(procs.total.cpu_ms, 3000.0);
        assert_eq!(procs.total.pss_mb_end, None, "unknown for one component, so unknown in total");
        let m = machine.unwrap();
        assert_eq!((m.busy_ms, m.idle_ms), (4000.0, 6000.0));
        assert_eq!(m.busy_share, Some(0.4));
        assert_eq!(m.listed_share_of_busy, Some(0.75));
        assert_eq!(client.cpu_ms, Some(200.0));
        assert_eq!(m.client_share_of_busy, Some(0.05));

        // Sampled again once idle: each component's RSS then, and their sum.
        let idle = Snapshot {
            components: [
                ("a".to_owned(), (1, tree(310, 3072))),
                ("gone".to_owned(), (2, None)),
                ("jvm".to_owned(), (3, None)),
            ]
            .into(),
            machine: None,
            client: None,
        };
        let mut procs = procs;
        add_idle(&mut procs, &idle, 10.0);
        assert_eq!(procs.components["a"].rss_mb_idle, Some(3.0));
        assert_eq!(procs.components["gone"].rss_mb_idle, None);
        assert_eq!((procs.total.rss_mb_idle, procs.total.idle_after_s), (Some(3.0), Some(10.0)));
    }

    #[test]
    fn proc_lists_parse_name_equals_pid_pairs_and_allow_empty_items() {
        let pg = ProcSpec { name: "pg".into(), pid: 42 };
        assert_eq!("pg=42".parse::<ProcList>(), Ok(ProcList(vec![pg.clone()])));
        assert_eq!(" pg = 42 ,, kafka=7,".parse::<ProcList>().map(|l| l.0.len()), Ok(2));
        assert_eq!("".parse::<ProcList>(), Ok(ProcList::default()));
        assert!("pg=x".parse::<ProcList>().is_err());
        assert!("=42".parse::<ProcList>().is_err());
        assert!("pg".parse::<ProcList>().is_err());
    }
}
