//! The GPU as `nvidia-smi` shows it, checked at start and after every job, with the boot script's
//! words: a machine whose GPU is gone must not take the next job.

use std::time::Duration;

use crate::clock::Clock;

/// What `nvidia-smi` showed: how many GPUs, and the first one's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpus {
    pub count: u32,
    pub name: String,
    pub memory: String,
    pub driver: String,
    pub cuda: Option<String>,
    /// The first line of the query, as the boot script logs it.
    pub first: String,
}

impl Gpus {
    /// One line for a person: `1 × Tesla T4 (15360 MiB), driver 535.183.01, CUDA 12.2`.
    pub fn describe(&self) -> String {
        format!(
            "{} × {} ({}), driver {}, CUDA {}",
            self.count,
            self.name,
            self.memory,
            self.driver,
            self.cuda.as_deref().unwrap_or("unknown")
        )
    }

    /// The runner's `.env` lines (every job's environment), as the boot script writes them.
    pub fn env_lines(&self, json_path: &str) -> String {
        format!(
            "GPU_RUNNER_GPU_NAME={}\nGPU_RUNNER_GPU_COUNT={}\nGPU_RUNNER_GPU_MEMORY={}\n\
             GPU_RUNNER_DRIVER_VERSION={}\nGPU_RUNNER_CUDA_VERSION={}\nGPU_RUNNER_GPU_JSON={json_path}\n",
            self.name,
            self.count,
            self.memory,
            self.driver,
            self.cuda.as_deref().unwrap_or_default()
        )
    }

    pub fn json(&self) -> String {
        serde_json::json!({
            "name": self.name, "count": self.count, "memory": self.memory,
            "driver_version": self.driver, "cuda_version": self.cuda.as_deref().unwrap_or_default(),
        })
        .to_string()
    }
}

/// Why the GPU check failed, in the boot script's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuProblem {
    #[error("nvidia-smi failed {attempts} times: {first_line}")]
    Failed { attempts: u32, first_line: String },
    #[error("nvidia-smi shows {shown} GPU(s) but --gpus asks for {wanted}")]
    TooFew { shown: u32, wanted: u32 },
    #[error(
        "nvidia-smi works, but the CUDA driver library {CUDA_DRIVER} does not load ({why}), so \
         CUDA in a job could not load either. Where the driver keeps it outside the loader's \
         paths (Colab and Kaggle: /usr/lib64-nvidia), start attach with LD_LIBRARY_PATH naming \
         that folder: jobs get LD_LIBRARY_PATH as attach has it"
    )]
    NoCudaDriver { why: String },
}

/// The CUDA driver library, by the name the CUDA runtime and every framework open it.
pub const CUDA_DRIVER: &str = "libcuda.so.1";

/// Whether the CUDA driver library loads with this process's loader paths, which are a job's too
/// (jobs get attach's `LD_LIBRARY_PATH`); the loader's words when it does not. Colab exposes it
/// only through `LD_LIBRARY_PATH=/usr/lib64-nvidia`, where `nvidia-smi` alone would pass.
pub fn cuda_driver_loads() -> Result<(), String> {
    // SAFETY: opening the NVIDIA driver library runs only its initialisers, which set nothing up
    // before `cuInit` (never called here); no symbol of it is used, and it is closed at once.
    match unsafe { libloading::Library::new(CUDA_DRIVER) } {
        Ok(library) => {
            let _ = library.close();
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn field(v: Option<&str>) -> String {
    v.unwrap_or_default().trim().to_owned()
}

/// Reads `nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader` and the
/// CUDA version from plain `nvidia-smi`'s banner.
pub fn read(query: &str, banner: &str) -> Option<Gpus> {
    let lines: Vec<&str> = query.lines().filter(|l| !l.trim().is_empty()).collect();
    let first = *lines.first()?;
    let mut fields = first.split(',');
    let cuda = banner
        .split("CUDA Version:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|v| v.trim_end_matches('|').to_owned())
        .filter(|v| !v.is_empty());
    Some(Gpus {
        count: u32::try_from(lines.len()).unwrap_or(u32::MAX),
        name: field(fields.next()),
        memory: field(fields.next()),
        driver: field(fields.next()),
        cuda,
        first: first.trim().to_owned(),
    })
}

async fn nvidia_smi(args: &[&str]) -> Result<String, String> {
    match tokio::process::Command::new("nvidia-smi")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
    {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            Err(text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("nvidia-smi is not installed or not on PATH (no NVIDIA driver)".to_owned())
        }
        Err(e) => Err(format!("could not run nvidia-smi: {e}")),
    }
}

/// How often the check asks, and how long it waits in between: a driver may still be loading.
pub const ATTEMPTS: u32 = 3;
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Asks `nvidia-smi`, a few times, and checks the count `wanted`.
pub async fn probe(wanted: u32, clock: Clock) -> Result<Gpus, GpuProblem> {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match nvidia_smi(&[
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .await
        {
            Ok(query) => {
                let banner = nvidia_smi(&[]).await.unwrap_or_default();
                let Some(gpus) = read(&query, &banner) else {
                    last = "no GPU listed".to_owned();
                    continue;
                };
                if gpus.count < wanted {
                    return Err(GpuProblem::TooFew {
                        shown: gpus.count,
                        wanted,
                    });
                }
                cuda_driver_loads().map_err(|why| GpuProblem::NoCudaDriver { why })?;
                return Ok(gpus);
            }
            Err(e) => last = e,
        }
        if attempt < ATTEMPTS {
            clock.sleep(INTERVAL).await;
        }
    }
    Err(GpuProblem::Failed {
        attempts: ATTEMPTS,
        first_line: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &str =
        "| NVIDIA-SMI 535.183.01   Driver Version: 535.183.01   CUDA Version: 12.2     |";

    #[test]
    fn reads_the_query_and_the_cuda_version_of_the_banner() {
        let gpus = read(
            "NVIDIA A10G, 23028 MiB, 550.90.07\nNVIDIA A10G, 23028 MiB, 550.90.07\n",
            BANNER,
        )
        .unwrap();
        assert_eq!(gpus.count, 2);
        assert_eq!(
            gpus.describe(),
            "2 × NVIDIA A10G (23028 MiB), driver 550.90.07, CUDA 12.2"
        );
        assert!(
            gpus.env_lines("/x/gpu.json")
                .contains("GPU_RUNNER_GPU_COUNT=2\n")
        );
        assert_eq!(read("", BANNER), None);
        assert_eq!(read("Tesla T4, 15360 MiB, 535.1", "").unwrap().cuda, None);
    }

    #[test]
    fn problems_speak_as_the_boot_script_does() {
        assert_eq!(
            GpuProblem::Failed {
                attempts: 3,
                first_line: "NVIDIA-SMI has failed".into()
            }
            .to_string(),
            "nvidia-smi failed 3 times: NVIDIA-SMI has failed"
        );
        assert_eq!(
            GpuProblem::TooFew {
                shown: 1,
                wanted: 2
            }
            .to_string(),
            "nvidia-smi shows 1 GPU(s) but --gpus asks for 2"
        );
    }
}
