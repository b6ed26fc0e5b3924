//! What a run's GPU machines cost and what its jobs used of them, for stop's summary: every
//! machine the run used (all its starts, attempts and pool members), how long it ran, its price
//! and the total; each job's GPU usage, from the `phase=gpu-usage` line the job-completed hook
//! left on the machine's console; and a cheaper GPU type when the usage shows one would have done.
//! Reading is the provider's; the rest is pure.

use chrono::{DateTime, Utc};

use crate::actions::Markdown;
use crate::clock::Clock;
use crate::machine::ec2::pricing::on_demand_list_price;
use crate::machine::{Machine, Price, ran_words};

/// What one job used of its GPUs, as the job-completed hook summed it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuUsage {
    pub gpus: u32,
    /// `None`: nvidia-smi gave no utilization (`[N/A]`, as for a GPU in MIG mode).
    pub peak_utilization: Option<u32>,
    pub mean_utilization: Option<u32>,
    pub peak_memory_mib: u32,
    pub memory_mib: u32,
    pub job_seconds: u64,
}

impl GpuUsage {
    /// From the machine's last words: its `phase=gpu-usage` line, if it has one.
    pub fn from_console(last_words: &[String]) -> Option<GpuUsage> {
        last_words
            .iter()
            .rev()
            .find_map(|l| l.split_once("phase=gpu-usage ").map(|(_, r)| r))
            .and_then(GpuUsage::from_fields)
    }

    /// From the hook's `gpus=… peak_memory_mib=…` fields (the `gpu-usage` file's line).
    pub fn from_fields(line: &str) -> Option<GpuUsage> {
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        };
        let small = |name: &str| field(name).and_then(|v| u32::try_from(v).ok());
        Some(GpuUsage {
            gpus: small("gpus")?,
            peak_utilization: small("peak_utilization"),
            mean_utilization: small("mean_utilization"),
            peak_memory_mib: small("peak_memory_mib")?,
            memory_mib: small("memory_mib")?,
            job_seconds: field("job_seconds")?,
        })
    }

    /// The GPU did nothing the whole job; not known of a GPU that reports no utilization.
    pub fn idle(&self) -> bool {
        self.peak_utilization == Some(0)
    }

    /// In words: "35 % peak, 35 % mean; 5.0 of 15.0 GiB", "utilization not reported; 9.0 of
    /// 15.0 GiB", or "idle the whole job".
    pub fn describe(&self) -> String {
        if self.idle() {
            return "idle the whole job".to_owned();
        }
        let memory = format!(
            "{:.1} of {:.1} GiB",
            f64::from(self.peak_memory_mib) / 1024.0,
            f64::from(self.memory_mib) / 1024.0
        );
        match (self.peak_utilization, self.mean_utilization) {
            (Some(peak), Some(mean)) => format!("{peak} % peak, {mean} % mean; {memory}"),
            _ => format!("utilization not reported; {memory}"),
        }
    }
}

/// One machine of the run, as the summary shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineUse {
    pub id: String,
    pub instance_type: String,
    /// From its launch (or resume) to its end, or to now, in seconds of the user's time.
    pub seconds: Option<u64>,
    pub price: Option<Price>,
    pub usage: Option<GpuUsage>,
}

impl MachineUse {
    pub fn of(
        m: &Machine,
        price: Option<Price>,
        usage: Option<GpuUsage>,
        now: DateTime<Utc>,
        clock: Clock,
    ) -> Self {
        let end = if m.state.is_ending() || m.state.is_paused() {
            m.state_since.unwrap_or(now)
        } else {
            now
        };
        MachineUse {
            id: m.id.clone(),
            instance_type: m.instance_type.clone(),
            seconds: m.ran_seconds(end, clock),
            price,
            usage,
        }
    }

    fn usd(&self) -> Option<f64> {
        Some(self.price.as_ref()?.usd(self.seconds?))
    }
}

/// Single-GPU EC2 types and their GPU's memory, for the right-size hint (AWS's instance type
/// pages, "Accelerated computing"); their prices are `ec2::pricing`'s list prices.
const ONE_GPU_TYPES: &[(&str, &str, u32)] = &[
    ("g4dn.xlarge", "T4", 16),
    ("g6.xlarge", "L4", 24),
    ("g5.xlarge", "A10G", 24),
    ("g4dn.2xlarge", "T4", 16),
    ("g6.2xlarge", "L4", 24),
    ("g5.2xlarge", "A10G", 24),
    ("p3.2xlarge", "V100", 16),
];

/// A job shorter than this says too little about what it needs.
const HINT_AFTER_SECONDS: u64 = 60;

/// A cheaper single-GPU type whose GPU memory holds the job's peak with room to spare (a fifth
/// more, and 1 GiB), when a job of the run shows one: never from a job shorter than a minute,
/// or one whose GPU sat idle.
pub fn right_size(uses: &[MachineUse]) -> Option<String> {
    uses.iter().find_map(|u| {
        let usage = u.usage?;
        // A GPU that reports no utilization may have sat idle too: no hint from it either.
        if usage.gpus != 1
            || usage.idle()
            || usage.peak_utilization.is_none()
            || usage.job_seconds < HINT_AFTER_SECONDS
        {
            return None;
        }
        let paid = u.price.as_ref()?.usd_per_hour;
        let need_gib = f64::from(usage.peak_memory_mib) / 1024.0 * 1.2 + 1.0;
        let (name, gpu, memory, usd) = ONE_GPU_TYPES
            .iter()
            .filter(|(name, _, memory)| *name != u.instance_type && f64::from(*memory) >= need_gib)
            .filter_map(|(name, gpu, memory)| {
                let usd = on_demand_list_price(name)?.usd_per_hour;
                Some((name, gpu, memory, usd))
            })
            .filter(|(.., usd)| *usd < paid)
            .min_by(|a, b| a.3.total_cmp(&b.3))?;
        Some(format!(
            "The job on {} peaked at {:.1} GiB of GPU memory: {name} ({gpu}, {memory} GiB, \
             ${usd:.3}/h) would have held it for ${:.3}/h less than {} (${paid:.3}/h). Put it \
             first in instance-types.",
            u.id,
            f64::from(usage.peak_memory_mib) / 1024.0,
            paid - usd,
            u.instance_type
        ))
    })
}

/// The section of stop's summary: the run's machines, what each cost and what its job used, the
/// total, and the hint.
pub fn markdown(uses: &[MachineUse]) -> String {
    let rows: Vec<Vec<String>> = uses
        .iter()
        .map(|u| {
            let usage = u
                .usage
                .map(|g| g.describe())
                .unwrap_or_else(|| "not reported".to_owned());
            vec![
                u.id.clone(),
                u.instance_type.clone(),
                u.seconds
                    .map(ran_words)
                    .unwrap_or_else(|| "unknown".to_owned()),
                u.price
                    .as_ref()
                    .map(Price::describe)
                    .unwrap_or_else(|| "unknown".to_owned()),
                u.usd()
                    .map(|usd| format!("≈ ${usd:.2}"))
                    .unwrap_or_else(|| "unknown".to_owned()),
                usage,
            ]
        })
        .collect();
    // Folded from 0.0: an empty f64 sum is -0.0, which prints as "$-0.00".
    let total = uses
        .iter()
        .filter_map(MachineUse::usd)
        .fold(0.0, |sum, usd| sum + usd);
    let unpriced = uses.iter().filter(|u| u.usd().is_none()).count();
    let mut md = Markdown::new()
        .heading(4, "What the run's GPU machines cost")
        .table(
            &["Machine", "Type", "Ran", "Price", "Cost", "GPU use"],
            &rows,
        )
        .paragraph(&match unpriced {
            0 => format!("Total ≈ ${total:.2} for {} machine(s).", uses.len()),
            n if n == uses.len() => format!(
                "No total: gpu-runner knows no price for {} (a pod's cost is its cluster's, \
                 an attached machine's its owner's).",
                if n == 1 {
                    "this machine".to_owned()
                } else {
                    format!("these {n} machines")
                }
            ),
            n => format!(
                "Total ≈ ${total:.2} for {} machine(s), and {n} whose price is not known.",
                uses.len() - n
            ),
        });
    if let Some(hint) = right_size(uses) {
        md = md.paragraph(&hint);
    }
    md.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(peak: u32, memory: u32, seconds: u64) -> Option<GpuUsage> {
        Some(GpuUsage {
            gpus: 1,
            peak_utilization: Some(peak),
            mean_utilization: Some(peak),
            peak_memory_mib: memory,
            memory_mib: 23028,
            job_seconds: seconds,
        })
    }

    fn on_g5(usage: Option<GpuUsage>) -> MachineUse {
        MachineUse {
            id: "i-1".into(),
            instance_type: "g5.xlarge".into(),
            seconds: Some(12 * 60),
            price: Some(Price {
                usd_per_hour: 1.006,
                source: "on-demand list price in us-east-1".into(),
            }),
            usage,
        }
    }

    #[test]
    fn the_console_line_is_read_back() {
        let words = vec![
            "gpu-runner: phase=runner status=exited code=0 seconds=1.0".to_owned(),
            "gpu-runner: phase=gpu-usage gpus=1 peak_utilization=40 mean_utilization=35 \
             peak_memory_mib=3072 memory_mib=15360 job_seconds=120 seconds=0.0"
                .to_owned(),
        ];
        assert_eq!(
            GpuUsage::from_console(&words),
            Some(GpuUsage {
                gpus: 1,
                peak_utilization: Some(40),
                mean_utilization: Some(35),
                peak_memory_mib: 3072,
                memory_mib: 15360,
                job_seconds: 120,
            })
        );
        assert_eq!(GpuUsage::from_console(&words[..1]), None);
        // A GPU in MIG mode: no utilization on the line.
        let mig = [
            "gpu-runner: phase=gpu-usage gpus=1 peak_memory_mib=9216 memory_mib=15360 \
                    job_seconds=120 seconds=0.0"
                .to_owned(),
        ];
        let usage = GpuUsage::from_console(&mig).unwrap();
        assert_eq!(usage.peak_utilization, None);
        assert!(!usage.idle());
        assert_eq!(
            usage.describe(),
            "utilization not reported; 9.0 of 15.0 GiB"
        );
        let unreported = MachineUse {
            usage: Some(usage),
            ..on_g5(None)
        };
        assert_eq!(right_size(&[unreported]), None);
    }

    #[test]
    fn a_hint_is_given_when_a_cheaper_gpu_holds_the_peak_and_withheld_otherwise() {
        let hint = right_size(&[on_g5(usage(40, 3072, 300))]).unwrap();
        assert!(
            hint.contains("g4dn.xlarge (T4, 16 GiB, $0.526/h)"),
            "{hint}"
        );
        assert!(hint.contains("$0.480/h less than g5.xlarge"), "{hint}");
        // 18 GiB needs a 24 GiB GPU: nothing cheaper than an L4.
        let big = right_size(&[on_g5(usage(90, 18 * 1024, 300))]).unwrap();
        assert!(big.contains("g6.xlarge (L4, 24 GiB"), "{big}");
        assert_eq!(right_size(&[on_g5(usage(40, 3072, 30))]), None, "too short");
        assert_eq!(right_size(&[on_g5(usage(0, 3072, 300))]), None, "idle");
        assert_eq!(
            right_size(&[on_g5(usage(90, 22 * 1024, 300))]),
            None,
            "nothing fits"
        );
        assert_eq!(right_size(&[on_g5(None)]), None);
    }

    #[test]
    fn the_summary_adds_up_the_run() {
        let mut other = on_g5(None);
        other.id = "i-2".into();
        other.seconds = Some(30 * 60);
        let md = markdown(&[on_g5(usage(40, 3072, 300)), other]);
        assert!(md.contains("| i-1 | g5.xlarge | 12 min |"), "{md}");
        assert!(
            md.contains("| ≈ $0.20 | 40 % peak, 40 % mean; 3.0 of 22.5 GiB |"),
            "{md}"
        );
        assert!(md.contains("Total ≈ $0.70 for 2 machine(s)."), "{md}");
        assert!(md.contains("g4dn.xlarge"), "{md}");
    }

    #[test]
    fn a_machine_is_billed_by_the_second_and_a_minute_at_least() {
        let ran_for = |seconds| MachineUse {
            seconds: Some(seconds),
            ..on_g5(None)
        };
        let usd = |seconds| ran_for(seconds).usd().unwrap_or_else(|| panic!("priced"));
        assert_eq!(usd(20), usd(60), "60 seconds at least");
        assert!((usd(90) - 1.006 * 90.0 / 3600.0).abs() < 1e-9);
        assert!(markdown(&[ran_for(20)]).contains("| i-1 | g5.xlarge | 20 s |"));
        assert!(markdown(&[ran_for(125)]).contains("| 2 min 5 s |"));
        assert!(markdown(&[ran_for(3 * 3600 + 125)]).contains("| 3 h 2 min |"));
    }

    #[test]
    fn the_time_is_the_users_on_a_faster_clock() {
        let machine = Machine {
            id: "i-1".into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: None,
            market: crate::plan::Market::OnDemand,
            state: crate::machine::State::Running,
            state_reason: None,
            state_since: None,
            launched_at: Some(DateTime::UNIX_EPOCH),
            tags: Default::default(),
        };
        let now = DateTime::UNIX_EPOCH + chrono::Duration::seconds(3);
        let env: crate::env::Env = [("GPU_RUNNER_CLOCK_SCALE", "60")].into_iter().collect();
        let fast = MachineUse::of(&machine, None, None, now, Clock::from_env(&env));
        assert_eq!(fast.seconds, Some(180));
        let real = MachineUse::of(&machine, None, None, now, Clock::default());
        assert_eq!(real.seconds, Some(3));
    }

    #[test]
    fn a_run_of_machines_without_a_price_has_no_total() {
        let mut pod = on_g5(usage(40, 3072, 300));
        pod.price = None;
        let md = markdown(std::slice::from_ref(&pod));
        assert!(md.contains("| unknown | unknown | 40 % peak"), "{md}");
        assert!(
            md.contains("No total: gpu-runner knows no price for this machine"),
            "{md}"
        );
        assert!(!md.contains("Total ≈"), "{md}");
        let md = markdown(&[pod.clone(), pod]);
        assert!(md.contains("no price for these 2 machines"), "{md}");
    }
}
