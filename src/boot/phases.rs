//! The boot script's console lines, read back: `gpu-runner: phase=<name> key=value key="a value"`
//! (see `log` in `boot.sh` and `refuse` in `job-started.sh`). Start reads them to say what the GPU
//! probe found and why a machine ended while it booted.

/// How a phase line starts.
pub const MARK: &str = "gpu-runner: phase=";

/// One phase line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    /// `key=value` pairs in their order; quoted values without their quotes.
    pub fields: Vec<(String, String)>,
}

impl Phase {
    /// Reads one console line; `None` for lines the boot script did not write as a phase.
    pub fn parse(line: &str) -> Option<Phase> {
        let rest = &line[line.find(MARK)? + MARK.len()..];
        let (name, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if name.is_empty() {
            return None;
        }
        let mut fields = Vec::new();
        loop {
            rest = rest.trim_start();
            let Some((key, after)) = rest.split_once('=') else {
                break;
            };
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => match quoted.split_once('"') {
                    Some((value, after)) => (value, after),
                    None => (quoted, ""),
                },
                None => after.split_once(' ').unwrap_or((after, "")),
            };
            fields.push((key.to_owned(), value.to_owned()));
            rest = after;
        }
        Some(Phase {
            name: name.to_owned(),
            fields,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn status(&self) -> Option<&str> {
        self.get("status")
    }
}

/// The phase lines of a console, in order.
pub fn phases(console: &str) -> impl Iterator<Item = Phase> + '_ {
    console.lines().filter_map(Phase::parse)
}

/// What a console shows of a boot: its last `n` phase lines or, when it has none yet (the
/// instance never ran the script), its last `n` lines.
pub fn last_words(console: &str, n: usize) -> Vec<String> {
    let phased: Vec<&str> = console
        .lines()
        .filter(|l| Phase::parse(l).is_some())
        .collect();
    let lines: Vec<&str> = if phased.is_empty() {
        console.lines().collect()
    } else {
        phased
    };
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| (*l).to_owned()).collect()
}

/// Whether the machine refused a job of another run (the job-started hook's `job-refused`).
pub fn refused_a_job(last_words: &[String]) -> bool {
    last_words
        .iter()
        .filter_map(|l| Phase::parse(l))
        .any(|p| p.name == "job-refused")
}

/// What the GPU probe found, from `phase=gpu-probe status=ok gpus=N first="NAME, MEMORY, DRIVER"
/// cuda=V`, in words.
pub fn gpu_found(console: &str) -> Option<String> {
    let probe = phases(console).find(|p| p.name == "gpu-probe" && p.status() == Some("ok"))?;
    Some(format!(
        "{} × {} (name, memory, driver); CUDA {}",
        probe.get("gpus")?,
        probe.get("first")?,
        probe.get("cuda").unwrap_or("unknown")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "[    0.000000] Linux version 6.1\n\
        cloud-init: running user data\n\
        gpu-runner: phase=watchdog status=ok max_lifetime_minutes=360\n\
        gpu-runner: phase=gpu-probe status=ok gpus=1 first=\"NVIDIA A10G, 23028 MiB, 550.54.15\" cuda=12.4\n\
        gpu-runner: phase=runner status=bound jobs_of=\"octo/app run 42\"\n\
        gpu-runner: phase=job-refused reason=\"the job belongs to run 7, not 42\"\n";

    #[test]
    fn reads_names_plain_and_quoted_values() {
        let all: Vec<Phase> = phases(CONSOLE).collect();
        assert_eq!(
            all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["watchdog", "gpu-probe", "runner", "job-refused"]
        );
        assert_eq!(
            all[1].get("first"),
            Some("NVIDIA A10G, 23028 MiB, 550.54.15")
        );
        assert_eq!(all[1].get("cuda"), Some("12.4"));
        assert_eq!(all[2].get("jobs_of"), Some("octo/app run 42"));
        assert_eq!(all[2].status(), Some("bound"));
        assert_eq!(Phase::parse("gpu-runner: phase="), None);
        assert_eq!(Phase::parse("kernel: phase=x"), None);
    }

    #[test]
    fn says_what_the_gpu_probe_found_and_whether_a_job_was_refused() {
        assert_eq!(
            gpu_found(CONSOLE).as_deref(),
            Some("1 × NVIDIA A10G, 23028 MiB, 550.54.15 (name, memory, driver); CUDA 12.4")
        );
        let words = last_words(CONSOLE, 2);
        assert_eq!(words.len(), 2);
        assert!(refused_a_job(&words));
        assert!(!refused_a_job(&last_words(CONSOLE, 3)[..1]));
        assert_eq!(gpu_found("gpu-runner: phase=gpu-probe status=failed"), None);
    }

    #[test]
    fn a_console_without_phases_shows_its_last_lines() {
        assert_eq!(last_words("a\nb\nc", 2), ["b", "c"]);
    }
}
