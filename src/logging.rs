//! `tracing` to stderr, one line per event, masked values redacted. The filter comes from
//! `GPU_RUNNER_LOG`, else `RUST_LOG`, else `info`; the Actions debug switch (`RUNNER_DEBUG=1`, set by
//! "Re-run with debug logging") adds gpu-runner's debug events.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::actions::mask;
use crate::env::Env;

/// The filter directives to use, and a complaint when the user's filter could not be read.
pub fn directives(env: &Env) -> (String, Option<String>) {
    let (var, given) = match (env.non_empty("GPU_RUNNER_LOG"), env.non_empty("RUST_LOG")) {
        (Some(v), _) => ("GPU_RUNNER_LOG", Some(v)),
        (None, Some(v)) => ("RUST_LOG", Some(v)),
        (None, None) => ("", None),
    };
    let mut problem = None;
    let mut base = "info".to_owned();
    if let Some(given) = given {
        match EnvFilter::try_new(given) {
            Ok(_) => base = given.to_owned(),
            Err(e) => {
                problem = Some(format!(
                    "{var}=\"{given}\" is not a log filter ({e}); using \"info\". Write a level such \
                     as debug, or gpu_runner=debug."
                ))
            }
        }
    }
    if env.non_empty("RUNNER_DEBUG") == Some("1") {
        base.push_str(",gpu_runner=debug");
    }
    (base, problem)
}

pub fn init(env: &Env) {
    let (directives, problem) = directives(env);
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr)
        .with_ansi(ansi)
        .with_target(false)
        .compact()
        .try_init();
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// Writes each formatted event to stderr with masked values replaced by `***`. The fmt layer hands
/// over one whole event per write, so a secret is never split across calls.
struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter
    }
}

struct RedactingWriter;

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = mask::redact(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        vars.iter().copied().collect()
    }

    #[test]
    fn gpu_runner_log_wins_over_rust_log() {
        let e = env(&[("GPU_RUNNER_LOG", "warn"), ("RUST_LOG", "trace")]);
        assert_eq!(directives(&e), ("warn".to_owned(), None));
        assert_eq!(directives(&env(&[("RUST_LOG", "trace")])).0, "trace");
        assert_eq!(directives(&env(&[])).0, "info");
    }

    #[test]
    fn runner_debug_turns_on_our_debug_events() {
        let e = env(&[("RUNNER_DEBUG", "1")]);
        assert_eq!(directives(&e).0, "info,gpu_runner=debug");
    }

    #[test]
    fn a_bad_filter_falls_back_with_a_reason() {
        let (base, problem) = directives(&env(&[("GPU_RUNNER_LOG", "gpu_runner=loud")]));
        assert_eq!(base, "info");
        assert!(
            problem
                .unwrap()
                .starts_with("GPU_RUNNER_LOG=\"gpu_runner=loud\" is not a log filter")
        );
    }
}
