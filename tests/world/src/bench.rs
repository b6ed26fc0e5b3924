//! The benchmark: the whole start → GPU job(s) → stop cycle through the local world, repeated,
//! with `count` 1, 4 and 16, cold (new instances) and warm (a pool's stopped instances resumed).
//! It measures what gpu-runner itself costs on top of the instance's boot: the world's clock runs
//! at real speed here, so start looks as it would on GitHub (every half second for the first two
//! minutes), and EC2 keeps an instance `stopping` as long as it would (a pool's stop does not wait
//! for it; the next cycle does).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::faults::Service;
use crate::step::Step;
use crate::{Options, World};

/// One cycle's figures.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The simulated boot: first `RunInstances` (or `StartInstances`) → last runner online.
    pub boot: Duration,
    /// Start's duration minus the simulated boot.
    pub overhead: Duration,
    /// From the last runner going online until start returned.
    pub noticed: Duration,
    pub stop: Duration,
    /// API calls of start and stop, by kind (`AWS RunInstances`, `GitHub generate-jitconfig`).
    pub calls: BTreeMap<String, u32>,
    /// Peak resident memory of the start and stop processes, KiB.
    pub start_peak_kib: Option<u64>,
    pub stop_peak_kib: Option<u64>,
    /// The boot phases of the cycle's first machine up to its runner's start, each with the
    /// seconds its console line gives (the time since the line before).
    pub phases: Phases,
}

/// A boot's phases in order, each with its seconds.
type Phases = Vec<(String, f64)>;

/// The boot phases in `console` lines (`[i-…] gpu-runner: phase=…`) of the first machine that
/// logged one, up to the line that starts its runner.
fn boot_phases(console: &[String]) -> Phases {
    let mut first: Option<&str> = None;
    let mut phases = Vec::new();
    for line in console {
        let Some(phase) = gpu_runner::boot::phases::Phase::parse(line) else {
            continue;
        };
        let machine = line.split(']').next().unwrap_or_default();
        if *first.get_or_insert(machine) != machine {
            continue;
        }
        let seconds = phase
            .get("seconds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        let name = match phase.status() {
            Some(status) if phase.name == "runner" => format!("runner {status}"),
            _ => phase.name.clone(),
        };
        let starting = name == "runner starting";
        phases.push((name, seconds));
        if starting {
            break;
        }
    }
    phases
}

fn count_calls(calls: &[(Service, String, Instant)], into: &mut BTreeMap<String, u32>) {
    for (service, call, _) in calls {
        let kind = match service {
            Service::Aws => "AWS",
            Service::Github => "GitHub",
        };
        *into.entry(format!("{kind} {call}")).or_default() += 1;
    }
}

/// One cycle with `count` instances in `world`, from the pool `pool` when there is one.
pub fn cycle(world: &World, bin: &Path, count: u32, pool: Option<&str>) -> Result<Sample, String> {
    world.faults.take_calls();
    let console_from = world.instance_log.lock().map(|l| l.len()).unwrap_or(0);
    let began = Instant::now();
    let step = Step::mode(bin, "start")
        .in_world(world)
        .input("count", &count.to_string());
    let step = match pool {
        Some(name) => step
            .input("role-to-assume", &world.pool_role_arn())
            .input("pool", name)
            .input("pool-size", &count.to_string()),
        None => step,
    };
    let (start, start_peak_kib) = step.spawn().wait_measured();
    let start_took = began.elapsed();
    let ended = Instant::now();
    if start.code != Some(0) {
        return Err(format!("start failed: {:?}", start.errors()));
    }
    let start_calls = world.faults.take_calls();
    let label = start.outputs().get("label").cloned().unwrap_or_default();
    let first_launch = start_calls
        .iter()
        .filter(|(_, call, _)| call == "RunInstances" || call == "StartInstances")
        .map(|(_, _, at)| *at)
        .min()
        .ok_or("start sent no RunInstances or StartInstances")?;
    let last_online = world
        .registered_runners()
        .iter()
        .filter(|r| r.labels.contains(&label))
        .filter_map(|r| r.online_at)
        .max()
        .ok_or("no runner went online")?;
    let boot = last_online.saturating_duration_since(first_launch);

    let jobs: Vec<u64> = (0..count)
        .map(|_| world.queue_job(&[&label], "nvidia-smi"))
        .collect();
    let done = world.wait_until(Duration::from_secs(60), |w| {
        jobs.iter()
            .all(|j| w.job(*j).is_some_and(|j| j.status == "completed"))
    });
    if !done {
        return Err("the GPU jobs did not finish within a minute".to_owned());
    }
    world.faults.take_calls();

    let stopped_at = Instant::now();
    let stop = Step::mode(bin, "stop").in_world(world).outputs_of(&start);
    // Pausing a pool's members is the pool role's (docs/iam/pool-policy.json).
    let stop = match pool {
        Some(_) => stop.input("role-to-assume", &world.pool_role_arn()),
        None => stop,
    };
    let (stop, stop_peak_kib) = stop.spawn().wait_measured();
    let stop_took = stopped_at.elapsed();
    if stop.code != Some(0) {
        return Err(format!("stop failed: {:?}", stop.errors()));
    }
    let mut calls = BTreeMap::new();
    count_calls(&start_calls, &mut calls);
    count_calls(&world.faults.take_calls(), &mut calls);
    // The next cycle starts from a quiet world: a pool's instances stopped, others ended.
    world.wait_until(Duration::from_secs(120), |w| match pool {
        Some(_) => {
            w.running_instances().is_empty()
                && w.live_instances()
                    .iter()
                    .all(|id| w.state_of(id).as_deref() == Some("stopped"))
        }
        None => w.live_instances().is_empty(),
    });
    let phases = world
        .instance_log
        .lock()
        .map(|l| boot_phases(&l[console_from.min(l.len())..]))
        .unwrap_or_default();
    Ok(Sample {
        phases,
        boot,
        overhead: start_took.saturating_sub(boot),
        noticed: ended.saturating_duration_since(last_online),
        stop: stop_took,
        calls,
        start_peak_kib,
        stop_peak_kib,
    })
}

/// The median of `values` (the upper one of an even count), which it leaves sorted; `None` when
/// there are none.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Median, min and max, as `median (min–max)`.
fn spread(mut values: Vec<f64>, unit: &str) -> String {
    let Some(median) = median(&mut values) else {
        return "n/a".to_owned();
    };
    format!(
        "{median:.2} {unit} ({:.2}–{:.2})",
        values[0],
        values[values.len() - 1]
    )
}

/// Runs `runs` cycles for each count, cold, then warm for the counts in `warm`, and returns the
/// report.
pub fn run(bin: &Path, runs: u32, counts: &[u32], warm: &[u32]) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(
        "| count | start | cycles | simulated boot | our overhead: start − simulated boot | runner online → start noticed | stop | start peak memory | stop peak memory |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut calls_by_row: Vec<(String, BTreeMap<String, u32>)> = Vec::new();
    let mut boots: Vec<(u32, &str, f64)> = Vec::new();
    let mut phases_by_row: Vec<(String, Vec<Phases>)> = Vec::new();
    let rows = counts
        .iter()
        .map(|c| (*c, "cold"))
        .chain(warm.iter().map(|c| (*c, "warm")));
    for (count, kind) in rows {
        let world = World::start(Options {
            clock_scale: 1.0,
            ..Options::default()
        })?;
        let pool = (kind == "warm").then_some("bench");
        if pool.is_some() {
            // Fills the pool: the cycles measured resume what this one launched.
            cycle(&world, bin, count, pool)?;
        }
        let mut samples = Vec::new();
        for _ in 0..runs {
            samples.push(cycle(&world, bin, count, pool)?);
        }
        let secs = |f: fn(&Sample) -> Duration| -> Vec<f64> {
            samples.iter().map(|s| f(s).as_secs_f64()).collect()
        };
        let mib = |f: fn(&Sample) -> Option<u64>| -> Vec<f64> {
            samples
                .iter()
                .filter_map(f)
                .map(|k| k as f64 / 1024.0)
                .collect()
        };
        if let Some(boot) = median(&mut secs(|s| s.boot)) {
            boots.push((count, kind, boot));
        }
        out.push_str(&format!(
            "| {count} | {kind} | {} | {} | {} | {} | {} | {} | {} |\n",
            samples.len(),
            spread(secs(|s| s.boot), "s"),
            spread(secs(|s| s.overhead), "s"),
            spread(secs(|s| s.noticed), "s"),
            spread(secs(|s| s.stop), "s"),
            spread(mib(|s| s.start_peak_kib), "MiB"),
            spread(mib(|s| s.stop_peak_kib), "MiB"),
        ));
        if let Some(first) = samples.first() {
            calls_by_row.push((format!("count {count} {kind}"), first.calls.clone()));
        }
        phases_by_row.push((
            format!("count {count} {kind}"),
            samples.iter().map(|s| s.phases.clone()).collect(),
        ));
    }
    out.push_str(
        "\nCompared with: the best-known peer action waits a 30 s quiet period after launching, \
         then polls every 10 s, so it first looks 30 s after launch and notices an online runner \
         30–40 s after launch whatever the boot took. gpu-runner looks every 0.5 s for the first \
         two minutes from the launch on (then every 1, 2 and 5 s), with one runner list and one \
         DescribeInstances per look whatever count is.\n",
    );
    for (count, _, warm_boot) in boots.iter().filter(|(_, k, _)| *k == "warm") {
        if let Some((_, _, cold_boot)) = boots.iter().find(|(c, k, _)| c == count && *k == "cold") {
            out.push_str(&format!(
                "\nSimulated boot, count {count}: {warm_boot:.2} s warm against {cold_boot:.2} s \
                 cold (medians), {:.2} s saved. The world's boot pulls no image or dataset and its \
                 runner package is local: what a warm start skips on AWS is not simulated here.",
                cold_boot - warm_boot
            ));
        }
    }
    out.push_str(&phase_table(&phases_by_row));
    out.push_str("\n\nAPI calls per cycle (start + stop), by kind:\n\n");
    let kinds: Vec<String> = {
        let mut k: Vec<String> = calls_by_row
            .iter()
            .flat_map(|(_, c)| c.keys().cloned())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    out.push_str(&format!(
        "| call | {} |\n|---|{}\n",
        calls_by_row
            .iter()
            .map(|(row, _)| row.clone())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(calls_by_row.len())
    ));
    for kind in kinds {
        out.push_str(&format!(
            "| {kind} | {} |\n",
            calls_by_row
                .iter()
                .map(|(_, c)| c.get(&kind).copied().unwrap_or(0).to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    Ok(out)
}

/// The boot's phases, one row each in the order the boot logs them, with each bench row's median
/// seconds (the first machine of each cycle).
fn phase_table(rows: &[(String, Vec<Phases>)]) -> String {
    let mut names: Vec<String> = Vec::new();
    for (_, cycles) in rows {
        for (name, _) in cycles.iter().flatten() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let mut out = format!(
        "\n\nBoot phases, from each machine's console (`seconds=` on its phase lines: the time \
         since the line before), median seconds of the first machine of each cycle:\n\n| phase | {} |\n|---|{}\n",
        rows.iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(rows.len())
    );
    for name in names {
        let cells: Vec<String> = rows
            .iter()
            .map(|(_, cycles)| {
                let mut values: Vec<f64> = cycles
                    .iter()
                    .flat_map(|c| c.iter().filter(|(n, _)| *n == name).map(|(_, s)| *s))
                    .collect();
                median(&mut values).map_or_else(|| "–".to_owned(), |m| format!("{m:.1}"))
            })
            .collect();
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    out
}
