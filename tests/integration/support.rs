//! The one way to build a step: the world crate's builder, bound to this package's binary.

pub use world::step::{Outcome, TOKEN};

pub struct Step;

impl Step {
    pub fn mode(mode: &str) -> world::step::Step {
        world::step::Step::mode(env!("CARGO_BIN_EXE_gpu-runner"), mode)
    }

    pub fn start() -> world::step::Step {
        world::step::Step::start(env!("CARGO_BIN_EXE_gpu-runner"))
    }

    pub fn stop() -> world::step::Step {
        world::step::Step::stop(env!("CARGO_BIN_EXE_gpu-runner"))
    }
}

/// Waits up to `limit` for job `id` to finish, and returns it.
#[track_caller]
pub fn finished(world: &world::World, id: u64, limit: std::time::Duration) -> world::github::Job {
    let done = world.wait_until(limit, |w| {
        w.job(id).is_some_and(|j| j.status == "completed")
    });
    let job = world.job(id).expect("the job");
    assert!(done, "job {id} never finished: {job:?}");
    job
}

/// Nothing is left: no live instance in moto, no runner in the fake GitHub.
#[track_caller]
pub fn nothing_left(world: &world::World) {
    let gone = world.wait_until(std::time::Duration::from_secs(10), |w| {
        w.live_instances().is_empty()
    });
    assert!(
        gone,
        "instances still running: {:?}",
        world.live_instances()
    );
    assert_eq!(world.registered_runners(), [], "runners still registered");
    assert_eq!(
        world.jit_parameters(),
        Vec::<String>::new(),
        "JIT configs still waiting in SSM"
    );
}

/// Nothing bills for compute and no runner is registered: what a pool leaves between jobs (its
/// stopped instances are kept on purpose).
#[track_caller]
pub fn nothing_running(world: &world::World) {
    let paused = world.wait_until(std::time::Duration::from_secs(20), |w| {
        w.running_instances().is_empty()
    });
    assert!(
        paused,
        "instances still running: {:?}",
        world.running_instances()
    );
    assert_eq!(world.registered_runners(), [], "runners still registered");
    assert_eq!(
        world.jit_parameters(),
        Vec::<String>::new(),
        "JIT configs still waiting in SSM"
    );
}

/// The step authenticates as the world's GitHub App instead of with a token.
pub fn as_app(step: world::step::Step) -> world::step::Step {
    step.unset("INPUT_GITHUB-TOKEN")
        .input("github-app-id", world::APP_ID)
        .input("github-app-private-key", world::APP_PRIVATE_KEY)
}

/// What users read: the README and the pages under docs/, one after the other.
pub fn user_docs() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut pages: Vec<std::path::PathBuf> = std::fs::read_dir(format!("{root}/docs"))
        .expect("docs/")
        .map(|e| e.expect("an entry of docs/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    std::iter::once(std::path::PathBuf::from(format!("{root}/README.md")))
        .chain(pages)
        .map(|p| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a summary has a table row of `id` that says it was terminated after some time, at
/// about what cost at `price` (how long depends on how fast this machine runs the world).
pub fn terminated_row(summary: &str, id: &str, price: &str) -> bool {
    summary.lines().any(|l| {
        l.strip_prefix(&format!("| {id} | "))
            .and_then(|rest| rest.split_once("terminated after "))
            .and_then(|(_, rest)| rest.split_once(" (≈ $"))
            .and_then(|(ran, rest)| seconds_of(ran).and(rest.split_once(' ')))
            .is_some_and(|(usd, rest)| {
                usd.parse::<f64>().is_ok() && rest == format!("at {price}) |")
            })
    })
}

/// The seconds of a machine's time in gpu-runner's words ("45 s", "2 min 8 s", "1 h 3 min").
pub fn seconds_of(ran: &str) -> Option<u64> {
    let words: Vec<&str> = ran.split_whitespace().collect();
    if words.is_empty() || words.len() % 2 != 0 {
        return None;
    }
    words
        .chunks(2)
        .map(|pair| {
            let n: u64 = pair[0].parse().ok()?;
            let unit = match pair[1] {
                "h" => 3600,
                "min" => 60,
                "s" => 1,
                _ => return None,
            };
            Some(n * unit)
        })
        .sum()
}
