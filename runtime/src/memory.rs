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
//! the work: a thread looks every [`LOOK_EVERY`] at the CPU time the process used. The first
//! quiet look after a busy one trims; so does a later quiet look that finds at least
//! [`RELEASE_AT_LEAST`] more freed since (what a burst's end frees a little later: its clients'
//! connections closing, idle pooled ones timing out). A process under steady load is never
//! quiet and keeps its memory for the next request; one that idles after a burst gives it back
//! within a few seconds, and what it frees later soon after.

use std::time::Duration;

/// How often the process's CPU time is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(2);
/// CPU time (clock ticks of 10 ms) below which a look counts as quiet: 2% of one core.
const QUIET_TICKS: u64 = 4;
/// Memory freed since the last trim (net of what was taken again) that a quiet look gives back.
pub const RELEASE_AT_LEAST: usize = 4 << 20;

/// Start the thread that trims the allocator after each busy stretch (glibc only; elsewhere
/// nothing to do: musl and the other systems' allocators return memory themselves).
pub fn release_when_quiet() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let spawned = std::thread::Builder::new().name("memory-release".into()).spawn(|| {
        let mut last = cpu_ticks();
        let mut releaser = Releaser::default();
        loop {
            std::thread::sleep(LOOK_EVERY);
            let now = cpu_ticks();
            let used = now.zip(last).map(|(now, last)| now.saturating_sub(last));
            last = now;
            if releaser.look(used, free_bytes) {
                let released = trim();
                releaser.trimmed(free_bytes());
                tracing::debug!(released, "gave freed memory back");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "memory release thread not started");
    }
}

/// When to trim, from what each look sees.
#[derive(Debug, Default)]
struct Releaser {
    /// The process was busy since the last quiet look.
    busy: bool,
    /// The fewest bytes free in the allocator since the last trim.
    low: Option<usize>,
}

impl Releaser {
    /// A look that found `used` clock ticks spent since the last; `free` reads the bytes free in
    /// the allocator (only on a quiet look). Whether to trim now.
    fn look(&mut self, used: Option<u64>, free: impl FnOnce() -> Option<usize>) -> bool {
        match used {
            Some(ticks) if ticks < QUIET_TICKS => {}
            Some(_) => {
                self.busy = true;
                return false;
            }
            None => return false,
        }
        let free = free();
        let freed_since = free.zip(self.low).is_some_and(|(free, low)| free >= low + RELEASE_AT_LEAST);
        self.low = match (free, self.low) {
            (Some(free), Some(low)) => Some(free.min(low)),
            (free, low) => free.or(low),
        };
        std::mem::take(&mut self.busy) || freed_since
    }

    /// The allocator was trimmed; `free` bytes are free in it now.
    fn trimmed(&mut self, free: Option<usize>) {
        self.low = free;
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

/// Bytes in the allocator's free chunks, over every arena (pages already given back included:
/// a trim leaves the chunks on the free lists).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn free_bytes() -> Option<usize> {
    // SAFETY: `mallinfo2` takes nothing and returns a plain struct of counters (glibc 2.33+),
    // reading each arena under its lock.
    Some(unsafe { libc::mallinfo2() }.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_bytes() -> Option<usize> {
    None
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

    const MB: usize = 1 << 20;

    #[test]
    fn the_first_quiet_look_after_a_busy_one_trims_once() {
        let mut r = Releaser::default();
        assert!(!r.look(Some(0), || Some(MB)), "quiet from the start: nothing to give back");
        assert!(!r.look(Some(50), || unreachable!("not read while busy")));
        assert!(!r.look(Some(QUIET_TICKS), || unreachable!()));
        assert!(r.look(Some(QUIET_TICKS - 1), || Some(40 * MB)));
        r.trimmed(Some(40 * MB));
        assert!(!r.look(Some(0), || Some(40 * MB)));
        assert!(!r.look(None, || unreachable!("no CPU time read: no decision")));
    }

    #[test]
    fn a_quiet_look_trims_again_once_enough_more_was_freed() {
        let mut r = Releaser::default();
        r.look(Some(9), || None);
        assert!(r.look(Some(0), || Some(10 * MB)));
        r.trimmed(Some(10 * MB));
        assert!(!r.look(Some(1), || Some(10 * MB + RELEASE_AT_LEAST - 1)));
        // Taken again and freed again: counted from the fewest free since the trim.
        assert!(!r.look(Some(1), || Some(8 * MB)));
        assert!(r.look(Some(1), || Some(8 * MB + RELEASE_AT_LEAST)));
        r.trimmed(Some(12 * MB));
        assert!(!r.look(Some(0), || Some(12 * MB)));
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_shows_as_free_bytes() {
        // Every other block freed: what stays in between keeps the freed ones off the heap's
        // top, where glibc would give them back by itself.
        let v: Vec<Vec<u8>> = (0..8000).map(|i| vec![1u8; 4096 + i % 64]).collect();
        let held = free_bytes().expect("mallinfo2");
        let kept: Vec<Vec<u8>> = v.into_iter().step_by(2).collect();
        let after = free_bytes().expect("mallinfo2");
        assert!(after >= held + 12 * MB, "holding {held}, after freeing half {after}");
        drop(std::hint::black_box(kept));
    }

    #[test]
    fn trimming_is_safe_to_call_any_time() {
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; 1024 + i]).collect();
        drop(v);
        let _ = trim();
        let _ = trim();
    }
}
