//! What attach asks of the machine itself: who it runs as, the user jobs run as, folders, and
//! signals to a process group. Thin wrappers over the standard tools every Linux has (`id`,
//! `useradd`, `runuser`, `kill`), so that no `unsafe` is needed.

use std::path::{Path, PathBuf};

/// The first number of `field` (`Uid:`, `PPid:`) in `/proc/PROCESS/status`, where `process` is
/// a pid or `self`.
pub fn status_field(process: &str, field: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Makes this process not dumpable (`prctl(PR_SET_DUMPABLE, 0)`, as ssh-agent does): the kernel
/// then lets no process without `CAP_SYS_PTRACE` read its memory or environment
/// (`/proc/PID/mem`, `/proc/PID/environ`, ptrace), not even one of the same user, and writes no
/// core dump of it (proc(5), ptrace(2) "ptrace access mode checking"). An exec makes a process
/// dumpable again, so the runner and the jobs it starts are unaffected.
#[cfg(target_os = "linux")]
pub fn hide_memory() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, set_dumpable_behavior};
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
pub fn hide_memory() -> std::io::Result<()> {
    Err(std::io::Error::other(
        "only Linux lets a process hide its memory from its own user",
    ))
}

/// This process's real user id, from `/proc/self/status`.
pub fn uid() -> Option<u32> {
    status_field("self", "Uid:")
}

pub fn is_root() -> bool {
    uid() == Some(0)
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// `rm -rf`, where a missing folder is fine.
pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The user jobs run as, and how attach starts things as that user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// attach runs as root and switches to `user` with `runuser` (which sets up its groups, the
    /// docker group among them); otherwise jobs run as attach's own user.
    pub switch: bool,
    /// attach created the user for jobs (its comment says so): it runs nothing else, so
    /// whatever runs as it after a job is the job's.
    pub dedicated: bool,
    pub home: PathBuf,
}

/// The comment of the users attach creates, by which it knows them again.
const DEDICATED: &str = "gpu-runner attach, for GitHub Actions jobs";

async fn id(flag: &str, user: &str) -> Option<u32> {
    let out = tokio::process::Command::new("id")
        .args([flag, user])
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The user's comment and home folder, from `/etc/passwd`.
fn passwd_entry(user: &str) -> Option<(String, PathBuf)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| (f[4].to_owned(), PathBuf::from(f[5])))
    })
}

impl RunAs {
    /// As root: `name`, created (with a home and bash) when missing; a user attach created is in
    /// the docker group exactly when `docker` says so. Otherwise this process's own user.
    pub async fn set_up(name: &str, docker: bool) -> Result<RunAs, String> {
        if !is_root() {
            let me = uid().ok_or("could not read this process's user id")?;
            let user = std::env::var("USER").unwrap_or_else(|_| me.to_string());
            let gid = id("-g", &me.to_string()).await.unwrap_or(me);
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            return Ok(RunAs {
                user,
                uid: me,
                gid,
                switch: false,
                dedicated: false,
                home,
            });
        }
        if name == "root" {
            return Err("--user root would run every job as root".to_owned());
        }
        if id("-u", name).await.is_none() {
            let out = tokio::process::Command::new("useradd")
                .args([
                    "--create-home",
                    "--shell",
                    "/bin/bash",
                    "--comment",
                    DEDICATED,
                    name,
                ])
                .output()
                .await
                .map_err(|e| format!("could not run useradd: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "useradd {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let (Some(uid), Some(gid)) = (id("-u", name).await, id("-g", name).await) else {
            return Err(format!("the user {name} has no user id after useradd"));
        };
        let (comment, home) = passwd_entry(name)
            .unwrap_or_else(|| (String::new(), PathBuf::from(format!("/home/{name}"))));
        // Docker's socket is root:docker 0660: container jobs need the group, and with it root.
        // A user attach made gets it only with --docker, and loses it without (an earlier
        // attach gave it); runuser sets the groups anew for every runner.
        if comment == DEDICATED && docker_group_exists() {
            let change = if docker {
                ["usermod", "-aG", "docker", name]
            } else {
                ["gpasswd", "-d", name, "docker"]
            };
            if docker != in_docker_group(name) {
                let out = tokio::process::Command::new(change[0])
                    .args(&change[1..])
                    .output()
                    .await
                    .map_err(|e| format!("could not run {}: {e}", change[0]))?;
                if !out.status.success() {
                    return Err(format!(
                        "{} failed: {}",
                        change.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        Ok(RunAs {
            user: name.to_owned(),
            uid,
            gid,
            switch: true,
            dedicated: comment == DEDICATED,
            home,
        })
    }

    /// `program args` as the job's user.
    pub fn command(&self, program: &str, args: &[String]) -> tokio::process::Command {
        if self.switch {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", &self.user, "--", program]).args(args);
            c
        } else {
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    }

    /// Gives `path` to the job's user.
    pub fn own(&self, path: &Path) -> std::io::Result<()> {
        if self.switch {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))?;
        }
        Ok(())
    }
}

fn docker_group_line() -> Option<String> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find(|l| l.starts_with("docker:"))
        .map(str::to_owned)
}

fn docker_group_exists() -> bool {
    docker_group_line().is_some()
}

/// Whether `user` is a member of the docker group (`/etc/group`'s last field).
pub fn in_docker_group(user: &str) -> bool {
    docker_group_line().is_some_and(|l| {
        l.rsplit(':')
            .next()
            .is_some_and(|members| members.split(',').any(|m| m == user))
    })
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) to every process of the group `pgid`; false when none
/// was left.
pub async fn signal_group(pgid: u32, signal: &str) -> bool {
    tokio::process::Command::new("kill")
        // `-SIGNAL -- -PGID`: the one form both procps's and util-linux's kill read as a group.
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Whether every other user may run `path` (each folder above it searchable, the file
/// executable by others): the job-started hook runs as the job's user.
pub fn others_may_run(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(path) & 0o005 == 0o005
        && path
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .all(|dir| mode(dir) & 0o001 != 0)
}
