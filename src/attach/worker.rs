//! The runner's `Runner.Worker`, the process that runs one job: the job-started hook is its child
//! (actions/runner's `JobHookProvider` starts it with the worker's `ProcessInvoker`), and it runs
//! the job's steps after the hook. A failed hook does not stop it: the hook is a pre-job step with
//! the condition `always()` (`JobExtension.cs`), so steps with `if: always()` or `if: failure()`
//! still run. A refused job's worker is therefore killed while it still waits for the hook: it
//! starts nothing meanwhile, and SIGKILL cannot be caught. The listener then reports the job as
//! failed (a crashed worker) and, ephemeral, exits.

use std::time::{Duration, Instant};

/// The name the runner's worker runs under (`/proc/PID/comm`).
const WORKER: &str = "Runner.Worker";

fn parent_of(pid: u32) -> Option<u32> {
    super::system::status_field(&pid.to_string(), "PPid:")
}

fn name_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|n| n.trim_end().to_owned())
}

/// The nearest `Runner.Worker` above `pid` (the hook, or a process the hook started).
pub fn above(pid: u32) -> Option<u32> {
    let mut pid = pid;
    for _ in 0..16 {
        let parent = parent_of(pid).filter(|p| *p > 1)?;
        if name_of(parent).as_deref() == Some(WORKER) {
            return Some(parent);
        }
        pid = parent;
    }
    None
}

/// The process group of `pid` (`/proc/PID/stat`'s fifth field, after the name in parentheses).
pub fn group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `pid` is gone: no such process, or a zombie its parent has not reaped yet.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(status) => status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

/// Kills the worker `pid` (SIGKILL, with the standard `kill`, so no `unsafe` is needed) and waits
/// until it is gone; false when it outlived the wait (it runs as a user this process cannot
/// signal).
pub fn end(pid: u32) -> bool {
    if name_of(pid).as_deref() != Some(WORKER) {
        return gone(pid);
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        if gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    gone(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// A stand-in worker: a script named Runner.Worker that runs `child`, then says it went on.
    fn worker(dir: &std::path::Path, child: &str) -> std::process::Child {
        let path = dir.join("Runner.Worker");
        std::fs::write(
            &path,
            format!("#!/bin/bash\n{child}\necho worker-went-on\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::process::Command::new(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn the_worker_above_a_hook_is_found_and_ended_before_it_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("hook.pid");
        let w = worker(
            dir.path(),
            &format!("bash -c 'echo $$ > {}; sleep 30'", pid_file.display()),
        );
        let hook = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                break pid;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(above(hook), Some(w.id()));
        assert!(end(w.id()));
        // The hook holds the worker's stdout: it goes too, so that the pipe closes.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &hook.to_string()])
            .status();
        let out = w.wait_with_output().unwrap();
        assert!(!String::from_utf8_lossy(&out.stdout).contains("worker-went-on"));
    }

    #[test]
    fn a_process_group_is_read_from_proc() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        assert_eq!(group_of(child.id()), Some(child.id()));
        child.kill().unwrap();
        let _ = child.wait();
    }

    #[test]
    fn nothing_is_ended_that_is_not_a_worker() {
        // This test process is no Runner.Worker, nor is anything above it.
        assert_eq!(above(std::process::id()), None);
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!end(sleeper.id()));
        assert!(sleeper.try_wait().unwrap().is_none(), "it was killed");
        sleeper.kill().unwrap();
        let _ = sleeper.wait();
    }
}
