//! The Actions runner packages gpu-runner installs: the architectures they come for, the versions
//! whose SHA-256 it knows (the pins, which the weekly `runner-bump` workflow extends), and where
//! one is downloaded from. Facts that `inputs`, `plan`, `boot` and `attach` all read, kept below
//! them.

/// The CPU architecture of an instance type, as the runner's packages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X64,
    Arm64,
}

impl Arch {
    /// From an EC2 instance type's name: AWS Graviton families carry a `g` after their generation
    /// (`g5g`, `c7gn`, `p6e-gb200`), and `a1` is the first Graviton. Everything else is x86-64.
    pub fn of_instance_type(instance_type: &str) -> Self {
        let family = instance_type.split('.').next().unwrap_or_default();
        let after_generation = family
            .find(|c: char| c.is_ascii_digit())
            .map(|i| family[i..].trim_start_matches(|c: char| c.is_ascii_digit()))
            .unwrap_or_default();
        if family == "a1" || after_generation.contains('g') {
            Arch::Arm64
        } else {
            Arch::X64
        }
    }

    /// The name in the runner package's file name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// Versions of the Actions runner whose package hashes gpu-runner knows, newest first, for each
/// architecture. The hashes are the ones GitHub publishes with each release; the weekly
/// `runner-bump` workflow proposes the next version's.
pub const PINNED_RUNNERS: &[PinnedRunner] = &[
    PinnedRunner {
        version: "2.337.0",
        arch: Arch::X64,
        sha256: "70920811a4f8ad4328818682bca5c6469c1c942fab52448868071d0063816613",
    },
    PinnedRunner {
        version: "2.337.0",
        arch: Arch::Arm64,
        sha256: "9b1dc70626422526e3c94767cf024896beb15da5342a3f4819bf2feac13e0393",
    },
    PinnedRunner {
        version: "2.336.0",
        arch: Arch::X64,
        sha256: "04cf0be1aff4c3ec3554466c39124ca250e3effd8873bb7e8d68535aa9505d5d",
    },
    PinnedRunner {
        version: "2.336.0",
        arch: Arch::Arm64,
        sha256: "58b758e420b87093fbd4bfddd368074960053e2f1388f01848c82624b90f27d1",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedRunner {
    pub version: &'static str,
    pub arch: Arch,
    pub sha256: &'static str,
}

/// The pinned hash of `version` for `arch`.
pub fn pinned(version: &str, arch: Arch) -> Option<&'static PinnedRunner> {
    PINNED_RUNNERS
        .iter()
        .find(|p| p.version == version && p.arch == arch)
}

/// Where GitHub publishes runner packages; `{version}` and `{arch}` are filled in.
pub const DEFAULT_RUNNER_URL: &str = "https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz";

/// The runner package the instance downloads, unless its image has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerPackage {
    pub version: String,
    pub url: String,
    pub sha256: String,
}

impl RunnerPackage {
    /// `version` for `arch`, from `url_template` (the GitHub releases URL unless the environment
    /// names a mirror).
    pub fn new(url_template: &str, version: &str, arch: Arch, sha256: &str) -> Self {
        Self {
            version: version.to_owned(),
            url: url_template
                .replace("{version}", version)
                .replace("{arch}", arch.name()),
            sha256: sha256.to_owned(),
        }
    }
}
