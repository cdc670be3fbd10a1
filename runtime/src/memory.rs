//! Memory a burst left behind, given back once the process is quiet.
//!
//! glibc's malloc keeps what a thread frees in that thread's arena for reuse and returns pages
//! to the system only from the top of a heap. After a burst (an overload turned away at the
//! door, a consumer catching up on a backlog, a flood of long-polls) a service stays at its
//! peak resident size long after that memory is free; librdkafka's buffers live there too, in
//! every service (the projectors' own allocations go through mimalloc, which returns its free
//! pages by itself). `malloc_trim(0)` gives the free pages of every arena back.
//!
//! It walks and locks the arenas one by one, so it runs when the process is quiet, not during
//! the work: a thread looks every [`LOOK_EVERY`] at the CPU time the process used, and the first
//! quiet look after a busy one trims, once. A process under steady load is never quiet and
//! keeps its memory for the next request; one that idles after a burst gives it back within a
//! few seconds.

use std::time::Duration;

/// How often the process's CPU time is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(2);
/// CPU time (clock ticks of 10 ms) below which a look counts as quiet: 2% of one core.
const QUIET_TICKS: u64 = 4;

/// Start the thread that trims the allocator after each busy stretch (glibc only; elsewhere
/// nothing to do: musl and the other systems' allocators return memory themselves).
pub fn release_when_quiet() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let spawned = std::thread::Builder::new().name("memory-release".into()).spawn(|| {
        let mut last = cpu_ticks();
        let mut busy = false;
        loop {
            std::thread::sleep(LOOK_EVERY);
            let now = cpu_ticks();
            let used = now.zip(last).map(|(now, last)| now.saturating_sub(last));
            last = now;
            match used {
                Some(ticks) if ticks >= QUIET_TICKS => busy = true,
                Some(_) if busy => {
                    busy = false;
                    let released = trim();
                    tracing::debug!(released, "gave freed memory back after a busy stretch");
                }
                _ => {}
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "memory release thread not started");
    }
}

/// User and system CPU time of this process so far, in clock ticks (`/proc/self/stat`).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses, which may hold spaces): state is field 3, utime
    // and stime fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and only rearranges glibc's own free lists, under
    // the arenas' locks; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_cpu_time_is_read_and_grows() {
        let before = cpu_ticks().expect("/proc/self/stat");
        let until = std::time::Instant::now() + Duration::from_millis(100);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = cpu_ticks().expect("/proc/self/stat");
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn trimming_is_safe_to_call_any_time() {
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; 1024 + i]).collect();
        drop(v);
        let _ = trim();
        let _ = trim();
    }
}
