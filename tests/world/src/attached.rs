//! Attached machines: a machine the user already has, which runs `gpu-runner attach` in the
//! foreground. In the world it is the instance sandbox without EC2 (an overlay over `/`, its own
//! PID and UTS namespaces, chroot) with the stand-in `nvidia-smi`, whose GPU the world can take
//! away, and the stand-in runner package served by the world.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::World;

/// The GPU each attached machine has now, by machine name: `healthy N` or `no-driver 0`, as the
/// stand-in `nvidia-smi` reads it from the world.
pub type Gpus = Arc<Mutex<HashMap<String, String>>>;

/// A machine running `gpu-runner attach`.
pub struct Attached {
    pub name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    gpus: Gpus,
    dir: PathBuf,
}

/// The machine attach runs on: its GPU, whose jobs it serves, and a shell command that sets it up
/// first.
struct Machine<'a> {
    gpu: &'a str,
    target: &'a [&'a str],
    prepare: Option<&'a str>,
    cuda: CudaLibrary,
}

impl<'a> Machine<'a> {
    /// A machine for the world's repository whose GPU is `gpu`, with nothing else set up and the
    /// driver's library where a driver package installs it.
    fn of_repo(gpu: &'a str) -> Self {
        Machine {
            gpu,
            target: &["--repo", "octo/ml"],
            prepare: None,
            cuda: CudaLibrary::Installed,
        }
    }
}

/// Where the machine's NVIDIA driver keeps `libcuda.so.1`, the library every CUDA program loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaLibrary {
    /// In the loader's default paths, as a driver package installs it (`/usr/lib`).
    Installed,
    /// Only under `/usr/lib64-nvidia`, which the loader searches only when `LD_LIBRARY_PATH`
    /// names it: Colab's layout, whose notebook processes have
    /// `LD_LIBRARY_PATH=/usr/lib64-nvidia` (Kaggle's images do the same). `with_path`: attach is
    /// started, as from a notebook cell, with that variable.
    Colab { with_path: bool },
}

/// A stand-in for the driver's `libcuda.so.1`: the calls a CUDA program makes first, answering
/// as a driver with one GPU does. A real shared object, so that the loader's search is real.
const CUDA_STUB: &str = "int cuInit(unsigned int flags) { (void)flags; return 0; }\n\
int cuDriverGetVersion(int *version) { *version = 12020; return 0; }\n\
int cuDeviceGetCount(int *count) { *count = 1; return 0; }\n";

impl World {
    /// Starts `gpu-runner attach` (the binary at `binary`) on a new machine with a healthy GPU,
    /// for the world's repository, with `token` in `GITHUB_TOKEN` and `flags` after the world's
    /// own (the runner package, which gpu-runner has not pinned).
    pub fn attach(&self, binary: &str, token: &str, flags: &[&str]) -> Attached {
        self.attach_with_gpu(binary, token, "healthy 1", flags)
    }

    /// The same on a machine whose GPU is `gpu` (`healthy N`, or `no-driver 0`: `nvidia-smi`
    /// fails as it does without a driver).
    pub fn attach_with_gpu(
        &self,
        binary: &str,
        token: &str,
        gpu: &str,
        flags: &[&str],
    ) -> Attached {
        let credentials = [format!("GITHUB_TOKEN={token}")];
        let machine = Machine::of_repo(gpu);
        self.attach_with_credentials(binary, &credentials, machine, flags)
    }

    /// The same on a machine that `prepare` (a shell command, run as root before attach starts)
    /// sets up first, such as `groupadd docker`: the Docker group the host may not have.
    pub fn attach_prepared(
        &self,
        binary: &str,
        token: &str,
        prepare: &str,
        flags: &[&str],
    ) -> Attached {
        let credentials = [format!("GITHUB_TOKEN={token}")];
        let machine = Machine {
            prepare: Some(prepare),
            ..Machine::of_repo("healthy 1")
        };
        self.attach_with_credentials(binary, &credentials, machine, flags)
    }

    /// The same on a notebook whose driver library is where Colab keeps it (see
    /// [`CudaLibrary::Colab`]).
    pub fn attach_on_colab(
        &self,
        binary: &str,
        token: &str,
        with_path: bool,
        flags: &[&str],
    ) -> Attached {
        let credentials = [format!("GITHUB_TOKEN={token}")];
        let machine = Machine {
            cuda: CudaLibrary::Colab { with_path },
            ..Machine::of_repo("healthy 1")
        };
        self.attach_with_credentials(binary, &credentials, machine, flags)
    }

    /// Builds the stand-in `libcuda.so.1` once per world, with the C compiler that links Rust.
    fn cuda_stub(&self) -> Result<PathBuf, String> {
        let dir = self.dir.path().join("cuda-stub");
        let library = dir.join("libcuda.so.1");
        if library.exists() {
            return Ok(library);
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let source = dir.join("cuda.c");
        std::fs::write(&source, CUDA_STUB).map_err(|e| e.to_string())?;
        let built = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&library)
            .arg(&source)
            .output()
            .map_err(|e| format!("cc: {e}"))?;
        if !built.status.success() {
            return Err(String::from_utf8_lossy(&built.stderr).into_owned());
        }
        Ok(library)
    }

    /// The same for the organization `octo` (`--org octo`), with `token`.
    pub fn attach_org(&self, binary: &str, token: &str, flags: &[&str]) -> Attached {
        let credentials = [format!("GITHUB_TOKEN={token}")];
        let machine = Machine {
            target: &["--org", "octo"],
            ..Machine::of_repo("healthy 1")
        };
        self.attach_with_credentials(binary, &credentials, machine, flags)
    }

    /// The same with the world's GitHub App in `GPU_RUNNER_APP_ID` and
    /// `GPU_RUNNER_APP_PRIVATE_KEY` instead of a token.
    pub fn attach_as_app(&self, binary: &str, flags: &[&str]) -> Attached {
        let credentials = [
            format!("GPU_RUNNER_APP_ID={}", crate::APP_ID),
            format!("GPU_RUNNER_APP_PRIVATE_KEY={}", crate::APP_PRIVATE_KEY),
        ];
        let machine = Machine::of_repo("healthy 1");
        self.attach_with_credentials(binary, &credentials, machine, flags)
    }

    fn attach_with_credentials(
        &self,
        binary: &str,
        credentials: &[String],
        machine: Machine,
        flags: &[&str],
    ) -> Attached {
        let (gpu, target) = (machine.gpu, machine.target);
        let name = format!("workstation-{}", crate::random_digits(4));
        self.attached_gpus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), gpu.to_owned());
        let dir = self.dir.path().join(&name);
        let bin = self.dir.path().join("attached-bin");
        let _ = crate::sandbox::install_standins(&bin);
        let folder = match machine.cuda {
            CudaLibrary::Installed => "usr/lib",
            CudaLibrary::Colab { .. } => "usr/lib64-nvidia",
        };
        let installed = self.cuda_stub().and_then(|stub| {
            let path = crate::sandbox::disk_path(&dir, folder);
            std::fs::create_dir_all(&path)
                .and_then(|()| std::fs::copy(stub, path.join("libcuda.so.1")))
                .map_err(|e| e.to_string())
        });
        if let Err(e) = installed {
            panic!("the attached machine's libcuda.so.1: {e}");
        }
        let gpu_url = format!("{}/_sim/gpu/{name}", self.github_url);
        let mut env = vec![
            "HOME=/root".to_owned(),
            "LANG=C.UTF-8".to_owned(),
            format!("GITHUB_API_URL={}", self.github_url),
            format!(
                "GPU_RUNNER_RUNNER_DOWNLOAD_URL={}/_package/actions-runner-linux-{{arch}}-{{version}}.tar.gz",
                self.github_url
            ),
            format!("GPU_RUNNER_CLOCK_SCALE={}", self.clock_scale),
            format!("GPU_SIM_GPU_URL={gpu_url}"),
            format!("GPU_SIM_CLOCK_SCALE={}", self.clock_scale),
        ];
        if machine.cuda == (CudaLibrary::Colab { with_path: true }) {
            env.push("LD_LIBRARY_PATH=/usr/lib64-nvidia".to_owned());
        }
        env.extend_from_slice(credentials);
        // attach stays the machine's first process: the preparation's shell execs it.
        let wrapper: Vec<String> = match machine.prepare {
            Some(p) => vec![
                "bash".into(),
                "-c".into(),
                format!("{p} && exec \"$@\""),
                "prepare".into(),
            ],
            None => Vec::new(),
        };
        let argv: Vec<String> = wrapper
            .iter()
            .map(String::as_str)
            .chain([binary, "attach"])
            .collect::<Vec<_>>()
            .iter()
            .chain(target)
            .chain(&[
                "--runner-version",
                crate::package::VERSION,
                "--runner-sha256",
                &self.runner_sha256,
                "--pass-env",
                "GPU_SIM_GPU_URL,GPU_SIM_CLOCK_SCALE",
            ])
            .chain(flags)
            .map(|a| (*a).to_owned())
            .collect();
        let mut child = crate::sandbox::spawn(&dir, &name, &bin, &env, &argv)
            .expect("start the attached machine");
        let output = crate::sandbox::collect(&mut child);
        Attached {
            name,
            child,
            output,
            gpus: self.attached_gpus.clone(),
            dir,
        }
    }
}

impl Attached {
    /// Everything attach printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `limit` until attach printed `text`; true when it did.
    pub fn wait_for(&self, text: &str, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.output().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.output().contains(text)
    }

    /// The attach process, as the host sees it: the child `unshare` forked.
    fn attach_pid(&self) -> Option<u32> {
        let parent = self.child.id();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
    }

    /// Sends `signal` (`TERM`, `INT`) to attach, as a user's `kill` or Ctrl-C would.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.attach_pid() {
            let _ = Command::new("kill")
                .args(["-s", signal, &pid.to_string()])
                .status();
        }
    }

    /// The GPU is gone from now on: `nvidia-smi` fails as it does without a driver.
    pub fn lose_gpu(&self) {
        self.gpus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.name.clone(), "no-driver 0".to_owned());
    }

    /// Whether attach has ended, with its exit code (`None` inside when a signal ended it).
    pub fn ended(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Waits up to `limit` for attach to end: its exit code, `None` if it had to be killed.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A file on the machine (its overlay's upper layer), by its path without the leading `/`.
    pub fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(crate::sandbox::disk_path(&self.dir, path)).ok()
    }

    /// Whether a path exists on the machine's disk (written since it started).
    pub fn exists(&self, path: &str) -> bool {
        crate::sandbox::disk_path(&self.dir, path).exists()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
