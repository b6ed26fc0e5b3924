//! The runner on an attached machine: the release package, downloaded once into a cache and
//! checked against its SHA-256 (again at every start, so a changed file is never run), then
//! unpacked afresh for every job by the user the job runs as. A job can change anything in its
//! runner's folder; the next job gets a clean one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::args::RunnerSource;
use super::system::{self, RunAs};
use crate::boot::RunnerPackage;

/// What went wrong with the runner package, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageProblem {
    pub what: String,
    pub fix: String,
}

/// Where each job's runner comes from once the package is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Tarball { path: PathBuf, version: String },
    Installed(PathBuf),
}

impl Ready {
    pub fn describe(&self) -> String {
        match self {
            Ready::Tarball { path, version } => {
                format!("runner {version}, checked, from {}", path.display())
            }
            Ready::Installed(dir) => format!("the runner installed in {}", dir.display()),
        }
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The package in `cache`, downloaded from `url_template` (the releases page unless the
/// environment names a mirror) when it is missing or does not match its hash.
pub async fn prepare(
    source: &RunnerSource,
    cache: &Path,
    url_template: &str,
) -> Result<Ready, PackageProblem> {
    let (version, sha256, arch) = match source {
        RunnerSource::Installed(dir) => {
            return if dir.join("run.sh").is_file() {
                Ok(Ready::Installed(dir.clone()))
            } else {
                Err(PackageProblem {
                    what: format!("--runner-dir {} holds no run.sh", dir.display()),
                    fix: "Point --runner-dir at the folder where the runner package was unpacked \
                          (it has run.sh and bin/), or leave it out to download the pinned runner."
                        .to_owned(),
                })
            };
        }
        RunnerSource::Package {
            version,
            sha256,
            arch,
        } => (version, sha256, arch),
    };
    let package = RunnerPackage::new(url_template, version, *arch, sha256);
    let path = cache.join(format!(
        "actions-runner-linux-{}-{version}.tar.gz",
        arch.name()
    ));
    if sha256_of(&path).is_ok_and(|h| h == *sha256) {
        return Ok(Ready::Tarball {
            path,
            version: version.clone(),
        });
    }
    std::fs::create_dir_all(cache).map_err(|e| PackageProblem {
        what: format!("could not create the cache folder {}: {e}", cache.display()),
        fix: "Give --cache-dir a folder this user may write.".to_owned(),
    })?;
    let download_failed = |why: String| PackageProblem {
        what: format!("could not download the runner from {}: {why}", package.url),
        fix: "Check that this machine reaches github.com (a notebook may block downloads), or \
              install the runner yourself and pass --runner-dir."
            .to_owned(),
    };
    let bytes = async {
        let response = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()?
            .get(&package.url)
            .send()
            .await?
            .error_for_status()?;
        response.bytes().await
    }
    .await
    .map_err(|e| download_failed(e.to_string()))?;
    let actual = format!("{:x}", Sha256::digest(&bytes));
    if actual != *sha256 {
        return Err(PackageProblem {
            what: format!("SHA-256 of {} is {actual}, expected {sha256}", package.url),
            fix: "The download is not the release gpu-runner expects: do not run it. Check \
                  --runner-sha256 against github.com/actions/runner/releases, or a mirror in \
                  GPU_RUNNER_RUNNER_DOWNLOAD_URL."
                .to_owned(),
        });
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, &bytes)
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|e| PackageProblem {
            what: format!("could not write {}: {e}", path.display()),
            fix: "Give --cache-dir a folder this user may write, with room for about 200 MB."
                .to_owned(),
        })?;
    Ok(Ready::Tarball {
        path,
        version: version.clone(),
    })
}

/// A fresh runner in `dir`, owned by the user jobs run as: whatever was there goes first.
pub async fn install(ready: &Ready, dir: &Path, run_as: &RunAs) -> Result<(), PackageProblem> {
    let failed = |e: String| PackageProblem {
        what: format!("could not set up the runner in {}: {e}", dir.display()),
        fix: "Check that --work-dir is on a disk with room, writable by this user.".to_owned(),
    };
    system::remove_dir(dir).map_err(|e| failed(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    run_as.own(dir).map_err(|e| failed(e.to_string()))?;
    let (program, args): (&str, Vec<String>) = match ready {
        Ready::Tarball { path, .. } => (
            "tar",
            vec![
                "-xzf".into(),
                path.display().to_string(),
                "-C".into(),
                dir.display().to_string(),
            ],
        ),
        Ready::Installed(from) => (
            "cp",
            vec![
                "-R".into(),
                format!("{}/.", from.display()),
                dir.display().to_string(),
            ],
        ),
    };
    let out = run_as
        .command(program, &args)
        .output()
        .await
        .map_err(|e| failed(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // What the last job's runner was registered as must never be reused.
    for stale in [
        ".runner",
        ".credentials",
        ".credentials_rsaparams",
        "_work",
        "_diag",
    ] {
        let _ = system::remove_dir(&dir.join(stale));
        let _ = std::fs::remove_file(dir.join(stale));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_runner_needs_its_run_sh() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let source = RunnerSource::Installed(dir.path().to_path_buf());
        let problem = rt
            .block_on(prepare(&source, dir.path(), "http://unused"))
            .unwrap_err();
        assert!(
            problem.what.ends_with("holds no run.sh"),
            "{}",
            problem.what
        );
        std::fs::write(dir.path().join("run.sh"), "#!/bin/bash\n").unwrap();
        assert_eq!(
            rt.block_on(prepare(&source, dir.path(), "http://unused")),
            Ok(Ready::Installed(dir.path().to_path_buf()))
        );
    }

    #[test]
    fn a_cached_package_with_the_right_hash_is_used_without_a_download() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = b"not really a tarball";
        let sha = format!("{:x}", Sha256::digest(bytes));
        let path = dir.path().join("actions-runner-linux-x64-2.999.0.tar.gz");
        std::fs::write(&path, bytes).unwrap();
        let source = RunnerSource::Package {
            version: "2.999.0".into(),
            sha256: sha,
            arch: crate::boot::Arch::X64,
        };
        // An unreachable URL: a download would fail.
        let ready = rt
            .block_on(prepare(&source, dir.path(), "http://127.0.0.1:9/{version}"))
            .unwrap();
        assert_eq!(
            ready,
            Ready::Tarball {
                path,
                version: "2.999.0".into()
            }
        );
    }
}
