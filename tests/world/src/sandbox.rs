//! The machine sandbox that attached machines and pods run in: an overlay over `/` (its upper
//! layer is the machine's disk), its own PID and UTS namespaces, chroot, a bare environment, and
//! the world's stand-ins first on `PATH`. The sandboxed program replaces the sandbox's shell, so
//! it is the machine's first process and receives the signals sent to it. (Instances run their
//! boot script under a shell of their own, see `simulator`.)

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

const SANDBOX: &str = r#"set -e
root="$1" upper="$2" work="$3" host="$4"
shift 4
mkdir -p "$root" "$upper" "$work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
hostname "$host"
exec chroot "$root" /usr/bin/env -i "$@"
"#;

/// Writes the stand-ins a machine without EC2 needs (`nvidia-smi`, `sleep` at the world's clock,
/// cron's `crontab`, Docker's CLI and `dlami-image` for its daemon) into `bin`.
pub fn install_standins(bin: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(bin)?;
    for (file, text) in [
        ("nvidia-smi", include_str!("standins/nvidia-smi")),
        ("sleep", include_str!("standins/sleep")),
        ("crontab", include_str!("standins/crontab")),
        ("at", include_str!("standins/at")),
        // A machine with Docker: its CLI, and `dlami-image` lays its daemon and group, as on
        // the Deep Learning AMI, when a test's preparation runs it.
        ("docker", include_str!("standins/docker")),
        ("dlami-image", include_str!("standins/dlami-image")),
    ] {
        let path = bin.join(file);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Ok(())
}

/// Runs `argv` in a sandbox whose disk is under `home`, named `host`, with `env` (`NAME=value`)
/// and `bin` first on `PATH`; stdout and stderr piped.
pub fn spawn(
    home: &Path,
    host: &str,
    bin: &Path,
    env: &[String],
    argv: &[String],
) -> std::io::Result<Child> {
    let path = format!(
        "PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        bin.display()
    );
    Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--uts",
            "--kill-child",
            "bash",
            "-c",
        ])
        .arg(SANDBOX)
        .arg("sandbox")
        .arg(home.join("root"))
        .arg(home.join("upper"))
        .arg(home.join("work"))
        .arg(host)
        .arg(path)
        .args(env)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Everything the sandboxed program prints, gathered as it comes.
pub fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    let output: Arc<Mutex<String>> = Arc::default();
    let pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for pipe in pipes.into_iter().flatten() {
        let output = output.clone();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(pipe);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                output
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&line);
                line.clear();
            }
        });
    }
    output
}

/// A file on a sandbox's disk (its upper layer), by its path without the leading `/`.
pub fn disk_path(home: &Path, path: &str) -> PathBuf {
    home.join("upper").join(path)
}
