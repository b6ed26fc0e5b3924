//! What a job leaves behind as its user, cleared before the next job runs: the processes it
//! started (even ones it detached from the runner's process group, and even as a user that was
//! there before attach), its crontab (put back as it was before the job), its `at` jobs, what it
//! wrote in the folders every user may write in, and with `--docker` the containers and volumes
//! it made. A user attach created for jobs runs nothing else, so its
//! home is emptied too; a user that was there before keeps its home, which attach says at start.
//! Only when jobs run as a user of their own (attach runs as root): run as attach's own user, a
//! job could undo all of this anyway.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::system::RunAs;

/// Where cron keeps each user's table (Debian's and Ubuntu's cron).
const CRONTABS: &str = "/var/spool/cron/crontabs";

/// The folders every user may write in, as a stock Linux has them, and where `at` keeps each
/// user's jobs (Debian's and Ubuntu's atd: one file per job, owned by its user).
const SHARED: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/var/spool/cron/atjobs"];

/// The job user's state just after its runner started.
#[derive(Debug, Clone)]
pub struct Before {
    /// The user's crontab as it was (`None`: it had none).
    crontab: Option<Vec<u8>>,
    /// When the runner started, in the kernel's clock ticks since boot (`/proc/PID/stat`): the
    /// user's processes that started since are the job's.
    runner_started: Option<u64>,
    /// The wall clock then (seconds, nanoseconds): what the user changed since is the job's.
    since: (i64, i64),
    /// Docker's containers and volumes then, when the job user can reach Docker.
    docker: Option<(Vec<String>, Vec<String>)>,
}

/// The start time of process `pid` in clock ticks since boot: `/proc/PID/stat`'s 22nd field,
/// counted after the command name, which may hold spaces and parentheses.
fn started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The real user id of process `pid`.
fn owner(pid: u32) -> Option<u32> {
    super::system::status_field(&pid.to_string(), "Uid:")
}

fn now() -> (i64, i64) {
    let t = chrono::Utc::now();
    (t.timestamp(), i64::from(t.timestamp_subsec_nanos()))
}

/// What the job user has as its runner `runner_pid` starts.
pub async fn before(run_as: &RunAs, runner_pid: u32) -> Before {
    Before {
        crontab: std::fs::read(Path::new(CRONTABS).join(&run_as.user)).ok(),
        runner_started: started(runner_pid),
        since: now(),
        docker: docker_state(run_as).await,
    }
}

/// The ids of Docker's containers and the names of its volumes, when the job user is in the
/// docker group (otherwise a job cannot have made any, and the machine's own stay untouched).
async fn docker_state(run_as: &RunAs) -> Option<(Vec<String>, Vec<String>)> {
    if !run_as.switch
        || !super::system::in_docker_group(&run_as.user)
        || !super::system::on_path("docker")
    {
        return None;
    }
    let list = |args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new("docker")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .await
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
    };
    Some((
        list(&["ps", "--all", "--quiet", "--no-trunc"]).await?,
        list(&["volume", "ls", "--quiet"]).await?,
    ))
}

/// Clears what the job left, sparing `keep` (attach's work folder); what it cleared, in words.
pub async fn clear(run_as: &RunAs, before: &Before, keep: &Path) -> Vec<String> {
    if !run_as.switch {
        return Vec::new();
    }
    let mut cleared = Vec::new();
    let processes = processes_since(run_as.uid, before.runner_started);
    if !processes.is_empty() {
        let _ = tokio::process::Command::new("kill")
            .arg("-KILL")
            .args(processes.iter().map(u32::to_string))
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        cleared.push(format!("{} process(es)", processes.len()));
    }
    if let (Some((containers, volumes)), Some((now_containers, now_volumes))) =
        (&before.docker, docker_state(run_as).await)
    {
        let new_containers: Vec<&String> = now_containers
            .iter()
            .filter(|c| {
                !containers
                    .iter()
                    .any(|b| b.starts_with(c.as_str()) || c.starts_with(b.as_str()))
            })
            .collect();
        let new_volumes: Vec<&String> = now_volumes
            .iter()
            .filter(|v| !volumes.contains(v))
            .collect();
        for (what, args, items) in [
            (
                "container(s)",
                ["rm", "--force", "--volumes"].as_slice(),
                &new_containers,
            ),
            (
                "volume(s)",
                ["volume", "rm", "--force"].as_slice(),
                &new_volumes,
            ),
        ] {
            if items.is_empty() {
                continue;
            }
            let _ = tokio::process::Command::new("docker")
                .args(args)
                .args(items.iter().map(|s| s.as_str()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
            cleared.push(format!("{} Docker {what}", items.len()));
        }
    }
    if restore_crontab(run_as, before.crontab.as_deref()) {
        cleared.push("its crontab".to_owned());
    }
    let mut files = 0;
    for dir in SHARED {
        files += remove_owned(Path::new(dir), run_as, before.since, keep);
    }
    if run_as.dedicated {
        files += empty_home(run_as);
    }
    if files > 0 {
        cleared.push(format!("{files} file(s) and folder(s)"));
    }
    cleared
}

/// The processes of `uid` that started at or after `since` (ticks since boot); all of them when
/// the runner's start is unknown. Never attach itself.
fn processes_since(uid: u32, since: Option<u64>) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && owner(*pid) == Some(uid))
        .filter(|pid| match (since, started(*pid)) {
            (Some(since), Some(at)) => at >= since,
            _ => true,
        })
        .collect()
}

/// Puts the user's crontab back as it was: true when the job had changed it.
fn restore_crontab(run_as: &RunAs, was: Option<&[u8]>) -> bool {
    let path = Path::new(CRONTABS).join(&run_as.user);
    let now = std::fs::read(&path).ok();
    if now.as_deref() == was {
        return false;
    }
    match was {
        None => {
            let _ = std::fs::remove_file(&path);
        }
        Some(table) => {
            if std::fs::write(&path, table).is_ok() {
                let _ = std::os::unix::fs::chown(&path, Some(run_as.uid), None);
            }
        }
    }
    true
}

/// Removes what `run_as` owns under `dir` and changed at or after `since` (anything it owns, for
/// a user of attach's own), never following a link and never inside `keep`; how many entries.
fn remove_owned(dir: &Path, run_as: &RunAs, since: (i64, i64), keep: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if keep.starts_with(&path) {
            // The work folder, or a folder above it: look inside, spare the work folder.
            if path != keep {
                removed += remove_owned(&path, run_as, since, keep);
            }
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let changed = (meta.ctime(), meta.ctime_nsec());
        let theirs = meta.uid() == run_as.uid && (run_as.dedicated || changed >= since);
        if theirs {
            let gone = if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed += usize::from(gone.is_ok());
        } else if meta.is_dir() {
            removed += remove_owned(&path, run_as, since, keep);
        }
    }
    removed
}

/// Empties the home of a user attach made for jobs, and gives it the system's skeleton again;
/// how many entries were not the skeleton's.
fn empty_home(run_as: &RunAs) -> usize {
    let skeleton: Vec<std::ffi::OsString> = std::fs::read_dir("/etc/skel")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(&run_as.home) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        let gone = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        if gone.is_ok() && !skeleton.contains(&entry.file_name()) {
            removed += 1;
        }
    }
    if let Ok(files) = std::fs::read_dir("/etc/skel") {
        for entry in files.flatten() {
            let to = run_as.home.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_file())
                && std::fs::copy(entry.path(), &to).is_ok()
            {
                let _ = run_as.own(&to);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_processs_start_and_owner_are_read_from_proc() {
        let me = std::process::id();
        let at = started(me).expect("this process's start time");
        assert!(at > 0);
        assert_eq!(owner(me), super::super::system::uid());
    }
}
