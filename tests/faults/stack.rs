//! The stack's service processes, from the outside: their pid records, signals to their process
//! groups, and `./stack restart`. [`Faults`] undoes whatever a case did when it is dropped.

use sqlx::PgConnection;
use std::process::Command;
use std::time::{Duration, Instant};

pub use e2e_tests::{data_dir, repo};

/// The recorded pid of a component. Each component runs in a session of its own, so the pid is
/// also its process group id.
pub fn pid(name: &str) -> i32 {
    let path = data_dir().join("run").join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name} is not running ({e})"));
    let record: serde_json::Value = serde_json::from_str(&text).expect("pid record");
    i32::try_from(record["pid"].as_i64().expect("pid")).expect("pid")
}

fn alive(pid: i32) -> bool {
    // Field 3 of /proc/<pid>/stat is the state; a zombie is as good as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Send `signal` (KILL, STOP, CONT) to the whole process group of `pid`.
fn signal(pid: i32, signal: &str) -> bool {
    Command::new("kill")
        .args([format!("-{signal}"), "--".to_owned(), format!("-{pid}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails at once if another `./stack` command holds the launcher's lock: `./stack restart`
/// would be refused.
pub fn assert_restartable() {
    // Under `./stack test` the lock is held by our ancestor, which lets its descendants restart
    // components (see tools/stack/cli.py).
    if std::env::var("SHOP_STACK_LOCK_OWNER").is_ok_and(|v| !v.is_empty()) {
        return;
    }
    let path = data_dir().join(".lock");
    let start = Instant::now();
    loop {
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).expect("stack lock");
        match file.try_lock() {
            Ok(()) => return, // released when `file` is dropped
            Err(_) if start.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => panic!(
                "another ./stack command holds {} ({e}), so killed services could not be restarted with \
                 `./stack restart`; run these tests with `cargo test -p e2e-tests --test faults -- --ignored` \
                 against a stack started with `./stack up`",
                path.display()
            ),
        }
    }
}

/// `./stack restart NAME`: SIGKILL it if it runs, start it, wait until healthy.
pub fn restart(name: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut cmd = Command::new(repo().join("stack"));
        if let Some(data) = std::env::var_os("SHOP_STACK_DATA") {
            cmd.arg("--data").arg(data);
        }
        let out = cmd.args(["restart", name]).current_dir(repo()).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // Another ./stack command (someone else's restart) holds the lock for a moment.
        if err.contains("another ./stack command") && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        return Err(format!("./stack restart {name}: {err}"));
    }
}

/// What a case did to the stack, undone on drop (also when an assertion fails): locks released
/// first, then stopped services resumed, then killed services started again.
#[derive(Default)]
pub struct Faults {
    locks: Vec<(String, PgConnection)>,
    stopped: Vec<(String, i32)>,
    killed: Vec<String>,
}

impl Faults {
    /// Keep a connection that holds a lock until [`Faults::release`] (or drop).
    pub fn hold(&mut self, what: &str, conn: PgConnection) {
        self.locks.push((what.to_owned(), conn));
    }

    /// Close the connection holding `what`: its transaction is rolled back, its session locks
    /// are released.
    pub async fn release(&mut self, what: &str) {
        let i = self.locks.iter().position(|(w, _)| w == what).unwrap_or_else(|| panic!("{what} is not held"));
        let (_, conn) = self.locks.remove(i);
        sqlx::Connection::close(conn).await.unwrap_or_else(|e| panic!("releasing {what}: {e}"));
    }

    /// SIGKILL the service's processes and wait until they are gone.
    pub fn kill(&mut self, name: &str) {
        let pid = pid(name);
        self.killed.push(name.to_owned());
        assert!(signal(pid, "KILL"), "kill -KILL {name} ({pid})");
        let start = Instant::now();
        while alive(pid) {
            assert!(start.elapsed() < Duration::from_secs(10), "{name} ({pid}) survived SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("    SIGKILL {name} (pid {pid})");
    }

    /// Start a killed service again (`./stack restart`), waiting until it is healthy.
    pub fn restart(&mut self, name: &str) {
        let t = Instant::now();
        restart(name).unwrap_or_else(|e| panic!("{e}"));
        self.killed.retain(|n| n != name);
        println!("    restarted {name} in {:.1}s", t.elapsed().as_secs_f64());
    }

    /// SIGSTOP the service's processes: they keep their sockets but do nothing.
    pub fn stop(&mut self, name: &str) {
        let pid = pid(name);
        self.stopped.push((name.to_owned(), pid));
        assert!(signal(pid, "STOP"), "kill -STOP {name} ({pid})");
        println!("    SIGSTOP {name} (pid {pid})");
    }

    pub fn resume(&mut self, name: &str) {
        let i = self.stopped.iter().position(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} is not stopped"));
        let (_, pid) = self.stopped.remove(i);
        assert!(signal(pid, "CONT"), "kill -CONT {name} ({pid})");
        println!("    SIGCONT {name} (pid {pid})");
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        // Dropping a connection closes its socket: the server rolls back and unlocks.
        self.locks.clear();
        for (name, pid) in self.stopped.drain(..) {
            if !signal(pid, "CONT") {
                eprintln!("cleanup: could not SIGCONT {name} ({pid})");
            }
        }
        for name in std::mem::take(&mut self.killed) {
            if let Err(e) = restart(&name) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
