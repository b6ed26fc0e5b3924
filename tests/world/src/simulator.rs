//! Instances that boot: for each new running instance in moto, its user data runs for real in a
//! sandbox that cannot change the host (a private mount namespace with an overlay over `/`, a PID
//! and UTS namespace, chroot), with stand-ins only for `nvidia-smi`, `shutdown`, `sleep` and the
//! image's Docker (`dlami-image` lays the Deep Learning AMI's docker group and socket). What it
//! prints becomes its console output; when the instance is terminated, the sandbox is killed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::{InstanceAttributeName, InstanceStateName};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::aws_front::Consoles;

/// How the runner on the simulated instances behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerBehaviour {
    /// Goes online, runs one job, exits.
    Normal,
    /// Starts but never reaches GitHub.
    NeverOnline,
    /// Takes a job, then crashes without finishing it.
    CrashMidJob,
}

impl RunnerBehaviour {
    fn env(self) -> &'static str {
        match self {
            RunnerBehaviour::Normal => "normal",
            RunnerBehaviour::NeverOnline => "never-online",
            RunnerBehaviour::CrashMidJob => "crash-mid-job",
        }
    }
}

/// The GPU the simulated instances have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gpu {
    /// A working driver with this many GPUs.
    Healthy(u32),
    /// `nvidia-smi` fails as it does before the driver loads, forever.
    NoDriver,
    /// The driver loads `after` (world time) into each boot, with this many GPUs; `nvidia-smi`
    /// fails as it does before the driver loads until then. On a GPU image the NVIDIA modules
    /// load during boot, and `nvidia-smi` run before them cannot reach the driver (NVIDIA's
    /// driver persistence docs; AWS's "Install NVIDIA drivers on Linux instances").
    Late { gpus: u32, after: Duration },
}

pub struct Simulator {
    /// The AWS endpoint, and the instance metadata service under it (`/_imds/{id}`).
    pub aws_url: String,
    pub ec2: aws_sdk_ec2::Client,
    pub consoles: Consoles,
    pub dir: PathBuf,
    pub control_url: String,
    pub scale: f64,
    pub gpu: Gpu,
    pub runner: RunnerBehaviour,
    /// The boot script is killed (SIGKILL, no trap runs) right after it logs this phase.
    pub die_after_phase: Option<&'static str>,
    /// Every console line of every instance, prefixed with its id: the demo prints it.
    pub log: Arc<Mutex<Vec<String>>>,
    /// With [`Gpu::Late`]: when each boot's driver loaded (or will), by instance id.
    pub driver_loads: Arc<Mutex<Vec<(String, SystemTime)>>>,
    /// GitHub stops hearing from the runner of an instance that is gone.
    pub github: crate::github::Shared,
    /// Each instance's zone, for its metadata service to tell.
    pub zones: Arc<Mutex<HashMap<String, String>>>,
}

/// How long after its machine is gone GitHub takes to show a busy runner offline and fail its
/// job, on the world's clock. GitHub documents no figure; the runner's listener polls for about a
/// minute at a time, so a minute is the least it can be.
pub const LOST_RUNNER_NOTICED_AFTER: Duration = Duration::from_secs(60);

const SANDBOX: &str = r#"set -e
root="$1" upper="$2" work="$3" bin="$4" script="$5" host="$6"
shift 6
mkdir -p "$root" "$upper" "$work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
hostname "$host"
# The image: what the Deep Learning AMI has before any user data runs (Docker and its socket).
chroot "$root" /usr/bin/env -i "PATH=$bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  bash "$bin/dlami-image"
# The user data is one process of the machine, as under cloud-init; the machine stays up after it
# ends (or dies) until it is terminated, and what the script left running goes on.
chroot "$root" /usr/bin/env -i "PATH=$bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  HOME=/root LANG=C.UTF-8 "$@" bash "$script" || true
while :; do /usr/bin/sleep 3600; done
"#;

/// User data as cloud-init reads it: a script, or a MIME multi-part message whose parts are
/// scripts (`text/x-shellscript`, `text/x-shellscript-per-boot`) and cloud-config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    /// A `text/x-shellscript` part (or the whole user data): cloud-init's `scripts_user` runs it,
    /// at the first boot only unless its module is given the frequency `always`.
    pub script: Vec<u8>,
    /// A `text/x-shellscript-per-boot` part: cloud-init (22.1 and later) writes it to
    /// `/var/lib/cloud/scripts/per-boot/` at every boot, where `scripts_per_boot` runs it
    /// (`cloudinit/handlers/shell_script_by_frequency.py`).
    pub per_boot: Vec<u8>,
    /// The cloud-config's `cloud_final_modules`, by name (`-` as `_`) with its frequency, if it
    /// gives the key: it replaces the image's list, never merges with it (cloud-init docs,
    /// "Merging user-data sections"; `config/cloud.cfg.tmpl` holds the image's list).
    pub final_modules: Option<Vec<(String, Option<String>)>>,
}

/// The image's `cloud_final_modules` that the world acts on: `scripts_per_boot` (the image's own
/// per-boot scripts and a user data's per-boot part) and `scripts_user` (once per instance).
const IMAGE_FINAL_MODULES: &[&str] = &["scripts_per_boot", "scripts_user"];

impl UserData {
    fn module(&self, name: &str) -> Option<Option<&str>> {
        match &self.final_modules {
            None => IMAGE_FINAL_MODULES.contains(&name).then_some(None),
            Some(list) => list
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| f.as_deref()),
        }
    }

    /// Whether cloud-init runs the per-boot scripts, the image's and the user data's, this boot.
    pub fn per_boot_runs(&self) -> bool {
        self.module("scripts_per_boot").is_some()
    }

    /// Whether cloud-init runs the user data's script this boot.
    pub fn script_runs(&self, first: bool) -> bool {
        match self.module("scripts_user") {
            None => false,
            Some(frequency) => first || frequency == Some("always"),
        }
    }

    /// The script this boot runs: the per-boot part (`scripts_per_boot` comes before
    /// `scripts_user` in the image's list), else the user data's script; empty when neither runs.
    pub fn script_for(&self, first: bool) -> Vec<u8> {
        if self.per_boot_runs() && !self.per_boot.is_empty() {
            self.per_boot.clone()
        } else if self.script_runs(first) {
            self.script.clone()
        } else {
            Vec::new()
        }
    }
}

/// The `cloud_final_modules` of a cloud-config, if it has the key: each entry a name or a
/// `[name, frequency]` list.
fn final_modules(cloud_config: &str) -> Option<Vec<(String, Option<String>)>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(cloud_config).ok()?;
    let list = doc.get("cloud_final_modules")?.as_sequence()?;
    Some(
        list.iter()
            .filter_map(|entry| {
                let (name, frequency) = match entry {
                    serde_yaml::Value::String(name) => (name.clone(), None),
                    serde_yaml::Value::Sequence(pair) => (
                        pair.first()?.as_str()?.to_owned(),
                        pair.get(1).and_then(|f| f.as_str()).map(str::to_owned),
                    ),
                    _ => return None,
                };
                Some((name.replace('-', "_"), frequency))
            })
            .collect(),
    )
}

/// User data as cloud-init takes it: gzip-compressed content is uncompressed first, then read as
/// if it had never been (cloud-init docs, "User-Data Formats", "Gzip Compressed Content";
/// `cloudinit/user_data.py` checks for gzip's magic bytes).
pub fn uncompressed(data: &[u8]) -> Vec<u8> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return data.to_vec();
    }
    let mut out = Vec::new();
    match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out) {
        Ok(_) => out,
        Err(_) => data.to_vec(),
    }
}

impl UserData {
    pub fn read(data: &[u8]) -> UserData {
        let data = uncompressed(data);
        let data = data.as_slice();
        let text = String::from_utf8_lossy(data);
        let boundary = text
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with("content-type: multipart/")
            })
            .and_then(|l| l.split("boundary=").nth(1))
            .map(|b| b.trim().trim_matches('"').to_owned());
        let Some(boundary) = boundary else {
            return UserData {
                script: data.to_vec(),
                per_boot: Vec::new(),
                final_modules: None,
            };
        };
        let mut read = UserData {
            script: Vec::new(),
            per_boot: Vec::new(),
            final_modules: None,
        };
        for part in text.split(&format!("--{boundary}")).skip(1) {
            let part = part.trim_start_matches(['\r', '\n']);
            let Some((headers, body)) = part.split_once("\n\n") else {
                continue;
            };
            let headers = headers.to_ascii_lowercase();
            let mut body = body.trim_end_matches(['\r', '\n']).as_bytes().to_vec();
            body.push(b'\n');
            if headers.contains("content-type: text/x-shellscript-per-boot") {
                read.per_boot = body;
            } else if headers.contains("content-type: text/x-shellscript") {
                read.script = body;
            } else if headers.contains("content-type: text/cloud-config") {
                read.final_modules = final_modules(&String::from_utf8_lossy(&body));
            }
        }
        read
    }
}

/// Kills every process running `script` (the boot script and its subshells) at once, as a crash
/// would: no trap of the script runs.
fn kill_script(script: &Path) {
    let want = format!("bash\0{}\0", script.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()) {
            // It may have ended by itself meanwhile: nothing to report then.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Simulator {
    fn install_standins(&self) -> std::io::Result<PathBuf> {
        let bin = self.dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        for (name, text) in [
            ("nvidia-smi", include_str!("standins/nvidia-smi")),
            ("shutdown", include_str!("standins/shutdown")),
            ("sleep", include_str!("standins/sleep")),
            ("docker", include_str!("standins/docker")),
            ("dlami-image", include_str!("standins/dlami-image")),
            ("crontab", include_str!("standins/crontab")),
            ("at", include_str!("standins/at")),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        // The Deep Learning AMI has the AWS CLI: the real one, pointed at the world's endpoints
        // by the environment (the AWS_ENDPOINT_URL and AWS_EC2_METADATA_SERVICE_ENDPOINT that
        // `boot` sets), as the CLI reads them.
        match crate::moto::aws_cli() {
            Ok(aws) => {
                let link = bin.join("aws");
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(aws, link)?;
            }
            Err(e) => self.note("world", &format!("no AWS CLI on the image: {e}")),
        }
        Ok(bin)
    }

    pub async fn run(self) {
        let bin = match self.install_standins() {
            Ok(bin) => bin,
            Err(e) => {
                self.note("world", &format!("could not install the stand-ins: {e}"));
                return;
            }
        };
        let mut booted: HashMap<String, Child> = HashMap::new();
        // How many times each instance booted: a restart runs its user data only when cloud-init
        // was told to.
        let mut boots: HashMap<String, u32> = HashMap::new();
        loop {
            if let Ok(out) = self.ec2.describe_instances().send().await {
                for i in out.reservations().iter().flat_map(|r| r.instances()) {
                    let Some(id) = i.instance_id() else { continue };
                    let state = i.state().and_then(|s| s.name());
                    match state {
                        Some(InstanceStateName::Running) if !booted.contains_key(id) => {
                            if let Some(zone) = i.placement().and_then(|p| p.availability_zone()) {
                                self.zones
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(id.to_owned(), zone.to_owned());
                            }
                            let n = boots.entry(id.to_owned()).or_default();
                            *n += 1;
                            if let Some(child) = self.boot(id, &bin, *n == 1).await {
                                booted.insert(id.to_owned(), child);
                            }
                        }
                        Some(
                            s @ (InstanceStateName::Terminated
                            | InstanceStateName::ShuttingDown
                            | InstanceStateName::Stopping
                            | InstanceStateName::Stopped),
                        ) => {
                            let stopped = matches!(
                                s,
                                InstanceStateName::Stopping | InstanceStateName::Stopped
                            );
                            if let Some(child) = booted.get_mut(id)
                                && child.try_wait().ok().flatten().is_none()
                            {
                                let _ = child.start_kill();
                                self.note(
                                    id,
                                    if stopped {
                                        "(instance stopped: its processes are gone, its disk stays)"
                                    } else {
                                        "(instance terminated: the machine is gone)"
                                    },
                                );
                                let label = i
                                    .tags()
                                    .iter()
                                    .find(|t| t.key() == Some("gpu-runner:label"))
                                    .and_then(|t| t.value());
                                if let Some(label) = label.map(str::to_owned) {
                                    // GitHub notices a lost runner only when it misses the
                                    // runner's heartbeats: until then it shows the runner busy
                                    // with its job (and refuses to delete it).
                                    let github = self.github.clone();
                                    let delay = LOST_RUNNER_NOTICED_AFTER.div_f64(self.scale);
                                    tokio::spawn(async move {
                                        tokio::time::sleep(delay).await;
                                        github
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner())
                                            .machine_gone(&label);
                                    });
                                }
                            }
                            if stopped {
                                // Started again, it boots again.
                                booted.remove(id);
                            }
                        }
                        _ => {}
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// What the world itself says of an instance: in the demo's log, not on its console.
    fn note(&self, id: &str, line: &str) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("[{id}] {line}"));
    }

    /// Boots the instance: its image, then, as cloud-init does, its user data's script at the
    /// first boot, and at later ones only when the user data asks for every boot.
    async fn boot(&self, id: &str, bin: &Path, first: bool) -> Option<Child> {
        let attr = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .ok()?;
        let encoded = attr.user_data().and_then(|v| v.value()).unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let user_data = UserData::read(&data);
        let script = user_data.script_for(first);
        let runs = !script.is_empty();
        let home = self.dir.join(id);
        std::fs::create_dir_all(&home).ok()?;
        // The overlay's work folder is the kernel's scratch space; the upper layer is the disk.
        let _ = std::fs::remove_dir_all(home.join("work"));
        let script_path = home.join("user-data.sh");
        std::fs::write(&script_path, script).ok()?;
        // cloud-init writes the script anew at each boot that runs it; a boot script that removed
        // its copy last time left a whiteout on the disk, which would hide the new one.
        if let Ok(inside) = script_path.strip_prefix("/") {
            let _ = std::fs::remove_file(home.join("upper").join(inside));
        }
        let (gpu_mode, gpus) = match self.gpu {
            Gpu::Healthy(n) | Gpu::Late { gpus: n, .. } => ("healthy", n),
            Gpu::NoDriver => ("no-driver", 0),
        };
        // Microseconds since the epoch, as the stand-in reads bash's EPOCHREALTIME.
        let mut driver_at = 0u128;
        if let Gpu::Late { after, .. } = self.gpu {
            let at = SystemTime::now() + after.div_f64(self.scale);
            driver_at = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or_default();
            self.driver_loads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id.to_owned(), at));
        }
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--uts",
                "--kill-child",
                "bash",
                "-c",
                SANDBOX,
                "sandbox",
            ])
            .arg(home.join("root"))
            .arg(home.join("upper"))
            .arg(home.join("work"))
            .arg(bin)
            .arg(&script_path)
            .arg(format!("ip-{}", id.trim_start_matches("i-")))
            .arg(format!("GPU_SIM_NVIDIA={gpu_mode}"))
            .arg(format!("GPU_SIM_GPUS={gpus}"))
            .arg(format!("GPU_SIM_DRIVER_AT={driver_at}"))
            .arg(format!("GPU_SIM_CLOCK_SCALE={}", self.scale))
            .arg(format!("GPU_SIM_RUNNER={}", self.runner.env()))
            .arg(format!("AWS_ENDPOINT_URL={}", self.aws_url))
            .arg(format!(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT={}/_imds/{id}",
                self.aws_url
            ))
            .arg(format!(
                "GPU_SIM_SHUTDOWN_URL={}/_sim/shutdown/{id}",
                self.control_url
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        self.note(
            id,
            match (first, runs) {
                (true, _) => "(instance booting: running its user data)",
                (false, true) => {
                    "(instance booting again: running its user data, as it asks at every boot)"
                }
                (false, false) => {
                    "(instance booting again: cloud-init ran its user data at the first boot only)"
                }
            },
        );
        if user_data.per_boot_runs() {
            // The world's image brings a per-boot script of its own, as images may (GPU clock or
            // persistence settings, agents): cloud-init's scripts_per_boot runs it at every boot
            // unless a cloud-config's cloud_final_modules leaves that module out.
            print(
                &self.consoles,
                &self.log,
                id,
                "cloud-init: /var/lib/cloud/scripts/per-boot/00-image.sh: the image's per-boot script ran",
            );
        }
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let consoles = self.consoles.clone();
            let log = self.log.clone();
            let id = id.to_owned();
            let die = self
                .die_after_phase
                .map(|p| (format!("phase={p} "), script_path.clone()));
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some((phase, script)) = &die
                        && line.contains(phase.as_str())
                    {
                        kill_script(script);
                        log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("[{id}] (the boot script died: killed)"));
                    }
                    print(&consoles, &log, &id, &line);
                }
            });
        }
        Some(child)
    }
}

/// A line printed on an instance's console: EC2's console output, and the demo's log.
fn print(consoles: &Consoles, log: &Mutex<Vec<String>>, id: &str, line: &str) {
    consoles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id.to_owned())
        .or_default()
        .push_str(&format!("{line}\n"));
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("[{id}] {line}"));
}

#[cfg(test)]
mod tests {
    use super::UserData;

    #[test]
    fn cloud_init_reads_a_script_or_a_multipart_message_and_its_per_boot_setting() {
        let plain = UserData::read(b"#!/bin/bash\necho hi\n");
        assert_eq!(plain.script_for(true), b"#!/bin/bash\necho hi\n");
        assert!(plain.script_for(false).is_empty(), "once per instance");
        assert!(
            plain.per_boot_runs(),
            "the image's list runs per-boot scripts"
        );
        let mime = "Content-Type: multipart/mixed; boundary=\"//\"\nMIME-Version: 1.0\n\n\
                    --//\nContent-Type: text/cloud-config; charset=\"us-ascii\"\n\n\
                    #cloud-config\ncloud_final_modules:\n- [scripts-user, always]\n\n\
                    --//\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n\
                    #!/bin/bash\necho hi\n\n--//--\n";
        let read = UserData::read(mime.as_bytes());
        assert_eq!(read.script_for(false), b"#!/bin/bash\necho hi\n");
        assert!(!read.per_boot_runs(), "the list replaced the image's");
        let once = UserData::read(mime.replace("always", "once-per-instance").as_bytes());
        assert!(once.script_for(false).is_empty());
        let per_boot = "Content-Type: multipart/mixed; boundary=\"//\"\nMIME-Version: 1.0\n\n\
                        --//\nContent-Type: text/x-shellscript-per-boot; charset=\"us-ascii\"\n\n\
                        #!/bin/bash\necho again\n\n--//--\n";
        let read = UserData::read(per_boot.as_bytes());
        assert!(read.per_boot_runs());
        assert_eq!(read.script_for(false), b"#!/bin/bash\necho again\n");
        assert_eq!(read.script_for(true), b"#!/bin/bash\necho again\n");
    }
}
