//! The instance's boot script: a template (`boot.sh`) and the values it needs, rendered so that
//! every value stays data. The rendered script carries the runner's JIT config: it is a `Secret`.

pub mod phases;

use crate::plan::JobBinding;
pub use crate::runner_package::{
    Arch, DEFAULT_RUNNER_URL, PINNED_RUNNERS, PinnedRunner, RunnerPackage, pinned,
};
use crate::secret::Secret;

const TEMPLATE: &str = include_str!("boot.sh");
const VALUES_MARKER: &str = "# @VALUES@";
/// The job-started hook, which the boot script writes out behind the values it expects.
const JOB_STARTED_HOOK: &str = include_str!("job-started.sh");
const HOOK_MARKER: &str = "# @JOB_STARTED_HOOK@";
/// The job-completed hook: the job's GPU usage, in its summary and on the console.
pub(crate) const JOB_COMPLETED_HOOK: &str = include_str!("job-completed.sh");
/// The GPU sampler a job-started hook starts for an accepted job.
pub(crate) const GPU_SAMPLER: &str = include_str!("gpu-sampler.sh");
const GPU_SAMPLER_MARKER: &str = "# @GPU_SAMPLER@";

/// The job-started hook of an instance or a pod, its GPU sampler in it.
pub(crate) fn job_started_hook() -> String {
    JOB_STARTED_HOOK.replacen(GPU_SAMPLER_MARKER, GPU_SAMPLER.trim_end(), 1)
}
pub(crate) const COMPLETED_HOOK_MARKER: &str = "# @JOB_COMPLETED_HOOK@";
/// The GPU probe, which the pod's entrypoint shares.
const GPU_PROBE: &str = include_str!("gpu-probe.sh");
pub(crate) const GPU_PROBE_MARKER: &str = "# @GPU_PROBE@";
/// How a phase line is written, which the pod's entrypoint shares too.
const PHASE_LINE: &str = include_str!("phase-line.sh");
pub(crate) const PHASE_LINE_MARKER: &str = "# @PHASE_LINE@";
/// Reading the JIT config from SSM: only the scripts of `jit-handoff: ssm` carry it.
const JIT_HANDOFF: &str = include_str!("jit-handoff.sh");
const JIT_HANDOFF_MARKER: &str = "# @JIT_HANDOFF@";
/// Clearing what the last job left: only a pool instance's scripts carry it.
const POOL_CLEAN: &str = include_str!("pool-clean.sh");
const POOL_CLEAN_MARKER: &str = "# @POOL_CLEAN@";

/// A line that is only a comment, and not one of the template's markers.
fn comment_only(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with('#')
        && line != VALUES_MARKER
        && line != HOOK_MARKER
        && line != COMPLETED_HOOK_MARKER
        && line != GPU_PROBE_MARKER
        && line != PHASE_LINE_MARKER
        && line != JIT_HANDOFF_MARKER
        && line != POOL_CLEAN_MARKER
}

/// A shared part's lines, without its comments.
fn uncommented(part: &str) -> String {
    part.lines()
        .filter(|l| !comment_only(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The GPU probe's lines, without its comments.
pub(crate) fn gpu_probe() -> String {
    uncommented(GPU_PROBE)
}

/// The phase line's writer, without its comments.
pub(crate) fn phase_line() -> String {
    uncommented(PHASE_LINE)
}

/// User data has room for 16 KB only: gpu-runner's own lines go without their indentation, which
/// means nothing to bash (the template has no here-document whose text it would change but the
/// hook's, where it means nothing either). Values are put in afterwards and keep every byte.
fn compact(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The boot script with `values` in it, reading the JIT config from SSM when `from_ssm`, and
/// clearing what the last job left when `pooled`.
fn script(values: &str, from_ssm: bool, pooled: bool) -> String {
    // User data has room for 16 KB only: the comments stay in the source, except the header that
    // says what the script is. The hook's `#!` line is written by the boot script, with the
    // values the hook expects.
    let hook = job_started_hook();
    let hook: Vec<&str> = hook.lines().filter(|l| !comment_only(l)).collect();
    let completed: Vec<&str> = JOB_COMPLETED_HOOK
        .lines()
        .filter(|l| !comment_only(l))
        .collect();
    let mut header = true;
    let template: Vec<&str> = TEMPLATE
        .lines()
        .filter(|l| {
            header &= l.starts_with('#');
            header || !comment_only(l)
        })
        .collect();
    let probe = gpu_probe();
    let probe: Vec<&str> = probe.lines().collect();
    let phase_line = phase_line();
    let phase_line: Vec<&str> = phase_line.lines().collect();
    let handoff: Vec<&str> = if from_ssm {
        JIT_HANDOFF.lines().filter(|l| !comment_only(l)).collect()
    } else {
        Vec::new()
    };
    let clean: Vec<&str> = if pooled {
        POOL_CLEAN.lines().filter(|l| !comment_only(l)).collect()
    } else {
        Vec::new()
    };
    let mut template = compact(&template);
    template.push('\n');
    template
        .replacen(HOOK_MARKER, &compact(&hook), 1)
        .replacen(COMPLETED_HOOK_MARKER, &compact(&completed), 1)
        .replacen(GPU_PROBE_MARKER, &compact(&probe), 1)
        .replacen(PHASE_LINE_MARKER, &compact(&phase_line), 1)
        .replacen(JIT_HANDOFF_MARKER, &compact(&handoff), 1)
        .replacen(POOL_CLEAN_MARKER, &compact(&clean), 1)
        .replacen(VALUES_MARKER, values, 1)
}

/// Everything the boot script needs to know.
#[derive(Debug, Clone)]
pub struct BootParams {
    pub runner_name: String,
    pub labels: Vec<String>,
    pub runner_user: String,
    /// Passwordless sudo for the runner user.
    pub runner_sudo: bool,
    pub jit_config: Secret,
    /// With `jit-handoff: ssm`, the SSM parameter that holds the JIT config instead of the user
    /// data, and its region: the instance reads it with its role, then deletes it.
    pub jit_parameter: Option<JitParameter>,
    pub instance_type: String,
    /// From the instance type; 0 when unknown (the probe then only needs one working GPU).
    pub expected_gpus: u32,
    pub max_lifetime_minutes: u32,
    pub idle_timeout_minutes: u32,
    pub runner: RunnerPackage,
    pub pre_runner_script: Option<String>,
    /// The only jobs the runner may run.
    pub binding: JobBinding,
    /// A pool instance: the script runs at every boot (each resume brings a new runner
    /// configuration), shutting down stops the instance, and a cache folder outlives the job.
    pub pooled: bool,
    /// A spot instance: it watches for AWS's two-minute interruption notice while it runs.
    pub spot: bool,
    /// What it costs an hour, for the job's usage report.
    pub price: HourlyPrice,
}

/// What an instance costs an hour (USD), as the job-completed hook prices the job with.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum HourlyPrice {
    /// A type without a list price, or a spot price EC2 did not give.
    #[default]
    Unknown,
    /// On-demand: its list price.
    List(f64),
    /// Spot: the price in effect in each zone at launch. EC2 picks the zone of an instance
    /// launched without a subnet, so the instance reads its own from its metadata.
    SpotByZone(Vec<(String, f64)>),
}

/// Where an instance reads its runner's JIT config with its own role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitParameter {
    pub name: String,
    pub region: String,
}

/// Quotes a value for bash: inside single quotes nothing is special, and a single quote is
/// written as `'\''`. Newlines, `$(...)`, backticks and quotes all arrive byte for byte.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn values(p: &BootParams, jit_config: &str) -> String {
    let vars: Vec<(&str, String)> = vec![
        ("RUNNER_NAME", p.runner_name.clone()),
        ("RUNNER_LABELS", p.labels.join(",")),
        ("RUNNER_USER", p.runner_user.clone()),
        ("RUNNER_SUDO", p.runner_sudo.to_string()),
        ("INSTANCE_TYPE", p.instance_type.clone()),
        ("EXPECTED_GPUS", p.expected_gpus.to_string()),
        ("GPU_PROBE_ATTEMPTS", "24".to_owned()),
        ("GPU_PROBE_INTERVAL_SECONDS", "5".to_owned()),
        ("MAX_LIFETIME_MINUTES", p.max_lifetime_minutes.to_string()),
        ("IDLE_TIMEOUT_MINUTES", p.idle_timeout_minutes.to_string()),
        ("RUNNER_VERSION", p.runner.version.clone()),
        ("RUNNER_URL", p.runner.url.clone()),
        ("RUNNER_SHA256", p.runner.sha256.clone()),
        (
            "PRE_RUNNER_SCRIPT",
            p.pre_runner_script.clone().unwrap_or_default(),
        ),
        ("JOB_REPOSITORY", p.binding.repository.clone()),
        ("JOB_RUN_ID", p.binding.run_id.to_string()),
        (
            "JOB_WORKFLOW_REF",
            p.binding.workflow_ref.clone().unwrap_or_default(),
        ),
        ("POOLED", p.pooled.to_string()),
        ("SPOT", p.spot.to_string()),
        (
            "PRICE_PER_HOUR",
            match &p.price {
                HourlyPrice::List(usd) => usd.to_string(),
                _ => String::new(),
            },
        ),
        (
            "SPOT_PRICES",
            match &p.price {
                HourlyPrice::SpotByZone(zones) => zones
                    .iter()
                    .map(|(zone, usd)| format!("{zone}={usd}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            },
        ),
        ("JIT_CONFIG", jit_config.to_owned()),
    ];
    let mut vars = vars;
    if let Some(j) = &p.jit_parameter {
        vars.push(("JIT_PARAMETER", j.name.clone()));
        vars.push(("JIT_REGION", j.region.clone()));
    }
    vars.iter()
        .map(|(name, value)| format!("readonly {name}={}\n", quote(value)))
        .collect()
}

/// EC2 takes at most 16 KB of user data, counted raw, before base64 (RunInstances, `UserData`).
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// Room kept for the JIT config before GitHub has issued it: GitHub's encode the runner's
/// settings, its OAuth credentials and its RSA key, a few KB.
pub const JIT_CONFIG_ROOM: usize = 4096;

/// A boot script too large for EC2's user data, and what makes it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// The whole user data, in bytes on the wire (compressed).
    pub size: usize,
    /// The part `pre-runner-script` takes, compressed as the script carries it.
    pub pre_runner_script: usize,
    /// The part the JIT config takes (or the room kept for it).
    pub jit_config: usize,
}

/// Where MIME parts of the user data begin and end.
const BOUNDARY: &str = "//gpu-runner-boundary//";

/// cloud-init runs a user-data script once, at an instance's first boot. A pool instance needs it
/// at every boot, each with the configuration of a new runner: a MIME part of type
/// `text/x-shellscript-per-boot` (cloud-init 22.1 and later) is written to
/// `/var/lib/cloud/scripts/per-boot/` at every boot, from the user data read anew, and the image's
/// own `scripts_per_boot` module runs it. A cloud-config `cloud_final_modules` (AWS's older
/// recipe, `[scripts-user, always]`) would replace the image's whole list, so that its per-boot,
/// per-instance and vendor scripts, deferred files and power-state changes never ran.
fn every_boot(script: &str) -> String {
    format!(
        "Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\nMIME-Version: 1.0\n\n\
         --{BOUNDARY}\nContent-Type: text/x-shellscript-per-boot; charset=\"us-ascii\"\n\
         MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n\
         Content-Disposition: attachment; filename=\"gpu-runner.sh\"\n\n{}\n--{BOUNDARY}--\n",
        script.trim_end()
    )
}

/// What the instance's user data holds: the script, in its MIME envelope for a pool instance.
fn user_data(p: &BootParams, jit_config: &str) -> String {
    let script = script(&values(p, jit_config), p.jit_parameter.is_some(), p.pooled);
    if p.pooled {
        every_boot(&script)
    } else {
        script
    }
}

/// The user data as it travels: gzip-compressed, which cloud-init undoes before it reads it
/// (cloud-init docs, "User-Data Formats": "Gzip Compressed Content ... useful because user-data is
/// limited to ~16384 bytes"). EC2 counts these bytes.
pub fn wire(user_data: &str) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to memory cannot fail.
    let _ = gz.write_all(user_data.as_bytes());
    gz.finish().unwrap_or_default()
}

/// Checks that the user data, with a JIT config of `jit_len` bytes, fits EC2's; its size on the
/// wire. A JIT config is random to a compressor, so it is counted whole.
pub fn check_size(p: &BootParams, jit_len: usize) -> Result<usize, TooLarge> {
    let size = wire(&user_data(p, "")).len() + jit_len;
    if size <= USER_DATA_LIMIT {
        return Ok(size);
    }
    let without = BootParams {
        pre_runner_script: None,
        ..p.clone()
    };
    Err(TooLarge {
        size,
        pre_runner_script: size.saturating_sub(wire(&user_data(&without, "")).len() + jit_len),
        jit_config: jit_len,
    })
}

/// The user data as the instance receives it.
pub fn render(p: &BootParams) -> Secret {
    Secret::new(user_data(p, p.jit_config.expose()))
}

/// The script with the JIT config replaced, for the log and the dry-run plan.
pub fn render_redacted(p: &BootParams) -> String {
    script(
        &values(p, crate::actions::mask::REDACTED),
        p.jit_parameter.is_some(),
        p.pooled,
    )
}

/// Fails unless shellcheck finds nothing in `text`, a bash script named `name`.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_shellcheck_clean(name: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new("shellcheck")
        .args(["--shell=bash", "--severity=style"])
        .arg(&path)
        .output()
        .expect("shellcheck runs (apt-get install shellcheck; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_check_counts_the_jit_config_and_names_the_scripts_share() {
        use sha2::Digest;
        // What a compressor cannot shrink: like a JIT config, or a script of hashes.
        let noise = |bytes: usize| -> String {
            (0u32..)
                .flat_map(|n| {
                    sha2::Sha256::digest(n.to_le_bytes())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                })
                .flat_map(|pair| pair.chars().collect::<Vec<_>>())
                .take(bytes)
                .collect()
        };
        let mut p = params();
        let fits = check_size(&p, JIT_CONFIG_ROOM).expect("the script alone fits");
        let real = wire(
            render(&BootParams {
                jit_config: Secret::new(noise(JIT_CONFIG_ROOM)),
                ..p.clone()
            })
            .expose(),
        )
        .len();
        assert!(
            real <= fits,
            "the check counts at least what travels: {real} > {fits}"
        );
        // A long script of few distinct lines compresses: 15 KB of it fits.
        p.pre_runner_script = Some("echo it's here\n".repeat(1000));
        assert!(check_size(&p, JIT_CONFIG_ROOM).is_ok());
        // 16 KB that do not compress do not fit, and the error says what share is the script's.
        p.pre_runner_script = Some(noise(16_000));
        let big = check_size(&p, JIT_CONFIG_ROOM).expect_err("16 KB of noise does not fit");
        assert!(big.size > USER_DATA_LIMIT);
        assert_eq!(big.jit_config, JIT_CONFIG_ROOM);
        // Hex compresses to about half.
        assert!(
            (7_000..=16_100).contains(&big.pre_runner_script),
            "{}",
            big.pre_runner_script
        );
    }

    #[test]
    fn user_data_travels_gzip_compressed_and_unpacks_to_the_script() {
        use std::io::Read;
        let text = render(&params());
        let sent = wire(text.expose());
        assert_eq!(
            &sent[..2],
            &[0x1f, 0x8b],
            "gzip's magic, which cloud-init looks for"
        );
        let mut back = String::new();
        flate2::read::GzDecoder::new(&sent[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text.expose());
        assert!(sent.len() * 2 < text.expose().len());
    }

    #[test]
    fn graviton_families_are_arm64_and_the_rest_x64() {
        for t in [
            "g5g.xlarge",
            "c7gn.large",
            "m6gd.metal",
            "a1.large",
            "p6e-gb200.36xlarge",
            "x2gd.large",
        ] {
            assert_eq!(Arch::of_instance_type(t), Arch::Arm64, "{t}");
        }
        for t in [
            "g4dn.xlarge",
            "g5.xlarge",
            "g6e.2xlarge",
            "gr6.4xlarge",
            "g4ad.xlarge",
            "p5en.48xlarge",
            "m7i-flex.large",
        ] {
            assert_eq!(Arch::of_instance_type(t), Arch::X64, "{t}");
        }
    }

    #[test]
    fn every_pinned_version_has_both_architectures() {
        for pin in PINNED_RUNNERS {
            for arch in [Arch::X64, Arch::Arm64] {
                let p = pinned(pin.version, arch).expect("pinned");
                assert_eq!(p.sha256.len(), 64);
                assert!(
                    p.sha256
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
            }
        }
        let mut hashes: Vec<&str> = PINNED_RUNNERS.iter().map(|p| p.sha256).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), PINNED_RUNNERS.len());
    }

    pub(crate) fn params() -> BootParams {
        BootParams {
            runner_name: "gpu-runner-1-1-abcd".into(),
            labels: vec!["gpu-runner-1-1-abcd".into(), "gpu".into()],
            runner_user: "runner".into(),
            runner_sudo: true,
            jit_config: Secret::new("JITSECRET"),
            jit_parameter: None,
            instance_type: "g5.xlarge".into(),
            expected_gpus: 1,
            max_lifetime_minutes: 360,
            idle_timeout_minutes: 15,
            // Fixed, not the table's newest: a new pin must not change this snapshot.
            runner: RunnerPackage::new(DEFAULT_RUNNER_URL, "2.337.0", Arch::X64, X64_2_337_0),
            pre_runner_script: Some("apt-get install -y jq\necho 'done'".into()),
            binding: JobBinding {
                repository: "octo/ml".into(),
                run_id: 4242,
                workflow_ref: Some("octo/ml/.github/workflows/gpu.yml@refs/heads/main".into()),
            },
            pooled: false,
            spot: false,
            price: HourlyPrice::List(1.006),
        }
    }

    #[test]
    fn a_spot_instance_gets_each_zones_price_and_an_on_demand_one_its_list_price() {
        let spot = BootParams {
            spot: true,
            price: HourlyPrice::SpotByZone(vec![
                ("us-east-1a".into(), 0.4123),
                ("us-east-1b".into(), 0.45),
            ]),
            ..params()
        };
        let text = values(&spot, "");
        assert!(text.contains("readonly PRICE_PER_HOUR=''\n"), "{text}");
        assert!(
            text.contains("readonly SPOT_PRICES='us-east-1a=0.4123 us-east-1b=0.45'\n"),
            "{text}"
        );
        let text = values(&params(), "");
        assert!(text.contains("readonly PRICE_PER_HOUR='1.006'\n"), "{text}");
        assert!(text.contains("readonly SPOT_PRICES=''\n"), "{text}");
    }

    #[test]
    fn a_pool_instance_runs_its_script_at_every_boot_and_the_envelope_counts_toward_16_kb() {
        let p = BootParams {
            pooled: true,
            ..params()
        };
        let data = render(&p);
        let data = data.expose();
        assert!(data.starts_with("Content-Type: multipart/mixed; boundary="));
        // The image's cloud_final_modules stay as they are.
        assert!(!data.contains("cloud-config") && !data.contains("cloud_final_modules"));
        let script_at = data.find("#!/bin/bash").expect("the script part");
        assert!(data[..script_at].contains("Content-Type: text/x-shellscript-per-boot"));
        assert!(data.contains("readonly POOLED='true'"));
        assert!(data.trim_end().ends_with(&format!("--{BOUNDARY}--")));
        // The envelope and the clean-up of the last job count too.
        let plain = check_size(&params(), JIT_CONFIG_ROOM).expect("fits");
        let enveloped = check_size(&p, JIT_CONFIG_ROOM).expect("fits");
        assert!(enveloped > plain + 300, "{enveloped} vs {plain}");
        assert_eq!(enveloped, wire(&user_data(&p, "")).len() + JIT_CONFIG_ROOM);
    }

    #[test]
    fn quoting_keeps_every_byte_as_data() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(
            quote("$(rm -rf /) `x` \"q\"\nEOF"),
            "'$(rm -rf /) `x` \"q\"\nEOF'"
        );
    }

    const X64_2_337_0: &str = "70920811a4f8ad4328818682bca5c6469c1c942fab52448868071d0063816613";

    #[test]
    fn runner_packages_come_from_github_releases_for_their_architecture() {
        let r = RunnerPackage::new(DEFAULT_RUNNER_URL, "2.337.0", Arch::X64, X64_2_337_0);
        assert_eq!(
            r.url,
            "https://github.com/actions/runner/releases/download/v2.337.0/actions-runner-linux-x64-2.337.0.tar.gz"
        );
        let pin = pinned("2.337.0", Arch::Arm64).expect("2.337.0 is pinned for arm64");
        let r = RunnerPackage::new(DEFAULT_RUNNER_URL, pin.version, pin.arch, pin.sha256);
        assert_eq!(
            r.url,
            "https://github.com/actions/runner/releases/download/v2.337.0/actions-runner-linux-arm64-2.337.0.tar.gz"
        );
        assert_eq!(r.sha256, pin.sha256);
    }

    #[test]
    fn the_rendered_script_carries_the_values_once() {
        let script = render(&params());
        let text = script.expose();
        assert!(text.starts_with("#!/bin/bash\n"));
        assert!(!text.contains(VALUES_MARKER));
        // The shared parts are in it, their markers gone.
        assert!(!text.contains("# @"), "a marker left");
        assert_eq!(text.matches("phase_line() {").count(), 1);
        assert_eq!(text.matches("readonly JIT_CONFIG='JITSECRET'").count(), 1);
        assert!(
            text.contains(
                "readonly PRE_RUNNER_SCRIPT='apt-get install -y jq\necho '\\''done'\\'''\n"
            )
        );
    }

    #[test]
    fn every_marker_of_the_template_is_filled_in() {
        for p in [
            params(),
            through_ssm(),
            BootParams {
                pooled: true,
                ..params()
            },
        ] {
            let text = render(&p).expose().to_owned();
            assert!(!text.contains("# @"), "a marker was left:\n{text}");
            // Each hook the boot script writes has its body.
            for hook in ["job-started", "job-completed"] {
                let at = text.find(&format!("> \"$HOOK_DIR/{hook}.sh\"")).unwrap();
                let body = &text[..at];
                let body = &body[body.rfind("cat << 'HOOK'").unwrap()..];
                assert!(body.lines().count() > 5, "{hook}: {body}");
            }
        }
    }

    #[test]
    fn the_redacted_script_has_no_jit_config() {
        let text = render_redacted(&params());
        assert!(!text.contains("JITSECRET"));
        assert!(text.contains("readonly JIT_CONFIG='***'"));
        let start = text.find("readonly RUNNER_NAME").unwrap();
        let end = text.find("readonly LOG_FILE").unwrap();
        let values = &text[start..end];
        insta::assert_snapshot!("boot_script_values", values);
    }

    #[test]
    fn the_rendered_script_is_shellcheck_clean() {
        let pooled = BootParams {
            pooled: true,
            ..params()
        };
        // A pool instance's script, without the MIME envelope it travels in.
        let pool_script = script(&values(&pooled, "JITSECRET"), false, true);
        for text in [
            render(&params()).expose().to_owned(),
            render(&through_ssm()).expose().to_owned(),
            pool_script,
        ] {
            assert_shellcheck_clean("boot.sh", &text);
        }
    }

    fn through_ssm() -> BootParams {
        BootParams {
            jit_config: Secret::new(""),
            jit_parameter: Some(JitParameter {
                name: "/gpu-runner/jit/octo/ml/gpu-runner-1-1-abcd".into(),
                region: "us-east-1".into(),
            }),
            ..params()
        }
    }

    #[test]
    fn only_a_script_that_reads_its_config_from_ssm_carries_the_reading_and_none_carries_both() {
        let plain = render(&params());
        assert!(!plain.expose().contains("aws ssm"));
        assert!(!plain.expose().contains("JIT_PARAMETER"));
        let ssm = render(&through_ssm());
        let text = ssm.expose();
        assert!(text.contains("readonly JIT_CONFIG=''"));
        assert!(
            text.contains("readonly JIT_PARAMETER='/gpu-runner/jit/octo/ml/gpu-runner-1-1-abcd'")
        );
        assert!(
            text.contains("aws ssm get-parameter") && text.contains("aws ssm delete-parameter")
        );
        // The reading comes before the runner starts with what it read.
        assert!(
            text.find("aws ssm delete-parameter").unwrap()
                < text
                    .find("ACTIONS_RUNNER_INPUT_JITCONFIG=\"$runner_jit\"")
                    .unwrap()
        );
    }

    /// Runs `command` to its end; fails the test, with what it said on stderr, unless it
    /// succeeded.
    #[track_caller]
    fn succeeds(command: &mut std::process::Command) -> std::process::Output {
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Writes the job-started hook into `dir` with the rendered script's own lines, and returns
    /// its path.
    fn write_hook(p: &BootParams, dir: &std::path::Path) -> std::path::PathBuf {
        let script = render(p);
        let text = script.expose();
        let values = &text[..text.find("readonly LOG_FILE").unwrap()];
        let start = text.find("{\nprintf '#!/bin/bash\\n'").unwrap();
        let end_marker = "} > \"$HOOK_DIR/job-started.sh\"\n";
        let end = text.find(end_marker).unwrap() + end_marker.len();
        let dir_quoted = quote(dir.to_str().unwrap());
        let program = format!(
            "{values}readonly JOB_MARKS={dir_quoted}\nreadonly HOOK_DIR={dir_quoted}\n{}",
            &text[start..end]
        );
        succeeds(std::process::Command::new("bash").arg("-c").arg(&program));
        dir.join("job-started.sh")
    }

    /// What became of a job after its job-started hook: the runner's worker went on with the
    /// hook's exit code, or was killed before it could run a step.
    #[derive(Debug, PartialEq, Eq)]
    enum AfterHook {
        WorkerWentOn(i32),
        WorkerKilled,
    }

    /// Runs the hook as the runner does, with a job's variables: as
    /// `bash --noprofile --norc -e -o pipefail HOOK`, the child of a process named
    /// `Runner.Worker`, which would run the job's steps next. What became of the job, and what
    /// the hook printed.
    fn run_hook(hook: &std::path::Path, job: &[(&str, &str)]) -> (AfterHook, String) {
        use std::os::unix::process::ExitStatusExt;
        let worker = hook.with_file_name("Runner.Worker");
        std::fs::write(
            &worker,
            "#!/bin/bash\nbash --noprofile --norc -e -o pipefail \"$1\"\n\
             echo \"worker-went-on $?\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&worker, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = std::process::Command::new(&worker)
            .arg(hook)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(job.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = match text.lines().find_map(|l| l.strip_prefix("worker-went-on ")) {
            Some(code) => AfterHook::WorkerWentOn(code.parse().unwrap()),
            None => {
                assert_eq!(out.status.signal(), Some(9), "{text}");
                AfterHook::WorkerKilled
            }
        };
        (after, text)
    }

    #[test]
    fn the_job_started_hook_lets_only_this_runs_jobs_start() {
        let ours = [
            ("GITHUB_REPOSITORY", "octo/ml"),
            ("GITHUB_RUN_ID", "4242"),
            (
                "GITHUB_WORKFLOW_REF",
                "octo/ml/.github/workflows/gpu.yml@refs/heads/main",
            ),
        ];
        let with = |key: &str, value: &'static str| -> Vec<(&'static str, &'static str)> {
            ours.iter()
                .map(|(k, v)| (*k, if *k == key { value } else { *v }))
                .collect()
        };
        type Job<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(Job, Option<&str>)> = vec![
            (ours.to_vec(), None),
            // GitHub's repository names are not case-sensitive.
            (with("GITHUB_REPOSITORY", "Octo/ML"), None),
            (
                with("GITHUB_RUN_ID", "999"),
                Some(
                    "this machine takes only jobs of octo/ml run 4242, and this job is of \
                     octo/ml run 999: another workflow run's job",
                ),
            ),
            (
                with("GITHUB_REPOSITORY", "mallory/ml"),
                Some("another repository's job"),
            ),
            (
                with(
                    "GITHUB_WORKFLOW_REF",
                    "octo/ml/.github/workflows/gpu.yml@refs/pull/7/merge",
                ),
                Some("this job's is octo/ml/.github/workflows/gpu.yml@refs/pull/7/merge"),
            ),
            (vec![], Some("an unknown repository run unknown")),
        ];
        for (job, refusal) in cases {
            let dir = tempfile::tempdir().unwrap();
            let hook = write_hook(&params(), dir.path());
            let (code, out) = run_hook(&hook, &job);
            match refusal {
                None => {
                    assert_eq!(code, AfterHook::WorkerWentOn(0), "{job:?}: {out}");
                    assert!(dir.path().join("job-started").exists());
                    assert!(!dir.path().join("job-refused").exists());
                }
                Some(why) => {
                    assert_eq!(code, AfterHook::WorkerKilled, "{job:?}: {out}");
                    assert!(out.contains("gpu-runner: phase=job-refused"), "{out}");
                    assert!(out.contains("::error title=gpu-runner refused this job::"));
                    assert!(out.contains(why), "{job:?}: {out}");
                    let marker = std::fs::read_to_string(dir.path().join("job-refused")).unwrap();
                    assert!(marker.contains(why), "{marker}");
                    assert!(!dir.path().join("job-started").exists());
                }
            }
        }
    }

    /// Whatever goes wrong in the hook (here its mark cannot be written, and the runner
    /// runs it with `-e`), the job does not go on: only an accepted job's worker survives.
    #[test]
    fn a_hook_that_fails_before_it_accepts_ends_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let hook = write_hook(&params(), dir.path());
        // `touch` follows the link into a folder that does not exist, and fails.
        std::os::unix::fs::symlink(
            dir.path().join("gone/job-started"),
            dir.path().join("job-started"),
        )
        .unwrap();
        let (after, out) = run_hook(
            &hook,
            &[
                ("GITHUB_REPOSITORY", "octo/ml"),
                ("GITHUB_RUN_ID", "4242"),
                (
                    "GITHUB_WORKFLOW_REF",
                    "octo/ml/.github/workflows/gpu.yml@refs/heads/main",
                ),
            ],
        );
        assert_eq!(after, AfterHook::WorkerKilled, "{out}");
        assert!(!out.contains("phase=job-accepted"), "{out}");
    }

    /// A refused job cancelled while the hook still runs (the worker sends it SIGINT, as
    /// ProcessInvoker does) ends at once: the worker would run the `always()` steps next.
    #[test]
    fn a_cancel_while_the_hook_refuses_ends_the_worker_at_once() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let hook = write_hook(&params(), dir.path());
        let worker = dir.path().join("Runner.Worker");
        std::fs::write(
            &worker,
            "#!/bin/bash\nbash --noprofile --norc -e -o pipefail \"$1\"\necho worker-went-on\n",
        )
        .unwrap();
        std::fs::set_permissions(&worker, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut child = std::process::Command::new(&worker)
            .arg(&hook)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("GITHUB_REPOSITORY", "octo/ml")
            .env("GITHUB_RUN_ID", "999")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let refused = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("phase=job-refused"));
        assert!(refused);
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
        let hook_pid = children.split_whitespace().next().unwrap().to_owned();
        // The cancel comes while the hook waits for the log to be sent (its `sleep` runs): a
        // SIGINT before that ends the worker too, after the wait.
        let in_wait = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            std::fs::read_to_string(format!("/proc/{hook_pid}/task/{hook_pid}/children"))
                .is_ok_and(|c| !c.trim().is_empty())
        });
        assert!(in_wait, "the hook never waited");
        let cancelled = std::time::Instant::now();
        std::process::Command::new("kill")
            .args(["-INT", &hook_pid])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        let took = cancelled.elapsed();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(took < std::time::Duration::from_millis(1500), "{took:?}");
        assert!(
            !lines
                .map_while(Result::ok)
                .any(|l| l.contains("worker-went-on"))
        );
    }

    #[test]
    fn the_hook_keeps_hostile_values_as_data_and_its_messages_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("CANARY");
        let mut p = params();
        p.binding.workflow_ref = Some(format!(
            "x\"$(touch {0})`touch {0}`'\nHOOK\n",
            canary.display()
        ));
        let hook = write_hook(&p, dir.path());
        assert!(!JOB_STARTED_HOOK.lines().any(|l| l == "HOOK"));
        // The job's own values come from whoever wrote the workflow: a newline or a `%` must not
        // start a workflow command of their own.
        let (code, out) = run_hook(
            &hook,
            &[
                ("GITHUB_REPOSITORY", "octo/ml"),
                ("GITHUB_RUN_ID", "4242"),
                ("GITHUB_WORKFLOW_REF", "evil\n::add-mask::%0A"),
            ],
        );
        assert_eq!(code, AfterHook::WorkerKilled, "{out}");
        assert!(!canary.exists(), "a value ran as code");
        assert!(!out.lines().any(|l| l.starts_with("::add-mask")), "{out}");
        assert!(out.contains("evil%0A::add-mask::%250A"), "{out}");
    }

    /// Fragments an attacker would try in a label, a name, a URL or a pre-runner script.
    const HOSTILE: &[&str] = &[
        "'",
        "\"",
        "`touch CANARY`",
        "$(touch CANARY)",
        "${IFS}",
        "$HOME",
        "\\",
        "\n",
        "EOF",
        "HOOK",
        "'\\''",
        ";touch CANARY;",
        "|",
        "&&",
        "#",
        "!",
        "*",
        "ü✓ü",
        "%s%n",
        "\t",
        " ",
        "readonly RUNNER_USER=root",
        "-e",
        "--",
        "\r",
    ];

    /// A deterministic xorshift, so that a failure replays.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn hostile(state: &mut u64) -> String {
        let n = 1 + next(state) % 8;
        (0..n)
            .map(|_| HOSTILE[(next(state) % HOSTILE.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn hostile_values_arrive_byte_for_byte_and_nothing_else_runs() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("CANARY");
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..200 {
            let mut p = params();
            p.runner_name = hostile(&mut state);
            p.labels = vec![hostile(&mut state), hostile(&mut state)];
            p.runner_user = hostile(&mut state);
            p.instance_type = hostile(&mut state);
            p.runner.url = hostile(&mut state);
            p.runner.version = hostile(&mut state);
            p.pre_runner_script = Some(hostile(&mut state));
            p.jit_config = Secret::new(hostile(&mut state));
            let script = render(&p);
            let script = script.expose();
            // The values, as the real script renders them, then each printed back.
            let cut = script.find("readonly LOG_FILE").unwrap();
            let probe = format!(
                "{}printf '%s\\0' \"$RUNNER_NAME\" \"$RUNNER_LABELS\" \"$RUNNER_USER\" \
                 \"$INSTANCE_TYPE\" \"$RUNNER_URL\" \"$RUNNER_VERSION\" \"$PRE_RUNNER_SCRIPT\" \
                 \"$JIT_CONFIG\"\n",
                &script[..cut]
            );
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(&probe)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .split('\0')
                .map(str::to_owned)
                .collect();
            let want = [
                p.runner_name.clone(),
                p.labels.join(","),
                p.runner_user.clone(),
                p.instance_type.clone(),
                p.runner.url.clone(),
                p.runner.version.clone(),
                p.pre_runner_script.clone().unwrap_or_default(),
                p.jit_config.expose().to_owned(),
                String::new(),
            ];
            assert_eq!(got, want, "round {round}");
            assert!(!canary.exists(), "round {round}: a value ran as code");
        }
    }

    /// The job-completed hook reads the samples once the sampler has ended, so that a sample on
    /// its way to the file counts, and leaves out a last line that was cut off mid-write. It
    /// stops only the sampler: a process that took over an ended sampler's number is left alone.
    #[test]
    fn the_completed_hook_waits_for_the_sampler_and_counts_only_whole_samples() {
        let dir = tempfile::tempdir().unwrap();
        let samples = dir.path().join("gpu-samples.csv");
        std::fs::write(&samples, "0, 40, 3072, 15360\n0, 50, 4096, 15360\n").unwrap();
        // Runs as the runner runs a hook (`bash -e -o pipefail`), the sampler's number in its file.
        let completed_hook = |pid: u32| {
            std::fs::write(dir.path().join("gpu-sampler.pid"), pid.to_string()).unwrap();
            succeeds(
                std::process::Command::new("bash")
                    .args(["--noprofile", "--norc", "-e", "-o", "pipefail", "-c"])
                    .arg(JOB_COMPLETED_HOOK)
                    .env("STATE_DIR", dir.path())
                    .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md")),
            );
        };
        // A bash by the name nvidia-smi (a process's name is its program file's), which waits
        // until it is told to stop.
        let bash = dir.path().join("nvidia-smi");
        std::os::unix::fs::symlink("/bin/bash", &bash).unwrap();
        let spawn = |program: &std::path::Path, script: String| {
            let mut child = std::process::Command::new(program)
                .arg("-c")
                .arg(format!(
                    "{script}; echo ready; while :; do sleep 0.05; done"
                ))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut ready = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                &mut ready,
            )
            .unwrap();
            child
        };

        // Not the sampler: lives on.
        let mut other = spawn(
            std::path::Path::new("/bin/bash"),
            "trap 'exit 7' TERM".into(),
        );
        completed_hook(other.id());
        assert!(
            other.try_wait().unwrap().is_none(),
            "the hook ended another process"
        );
        let _ = other.kill();
        let _ = other.wait();

        // The sampler, whose last sample reaches the file only after it was told to stop.
        let mut sampler = spawn(
            &bash,
            format!(
                "trap 'printf \"0, 70, 6144, 15360\\n0, 99, 9000, 15\" >> {}; exit' TERM",
                quote(samples.to_str().unwrap())
            ),
        );
        completed_hook(sampler.id());
        let _ = sampler.wait();
        let usage = std::fs::read_to_string(dir.path().join("gpu-usage")).unwrap();
        assert_eq!(
            usage,
            "gpus=1 peak_utilization=70 mean_utilization=53 peak_memory_mib=6144 \
             memory_mib=15360 job_seconds=3\n"
        );
        let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            summary.contains("| 0 | 70 % | 53 % | 6.0 of 15.0 GiB | 0 % of the job |"),
            "{summary}"
        );
    }
}
