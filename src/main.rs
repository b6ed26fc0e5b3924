//! Thin: read the environment, set up logging, run the mode, turn the outcome into an exit code.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use gpu_runner::actions::{Actions, mask};
use gpu_runner::env::Env;
use gpu_runner::modes::failure as error;
use gpu_runner::modes::{self, Step};

fn main() -> ExitCode {
    let env = Env::from_process();
    gpu_runner::logging::init(&env);
    let actions = Actions::from_env(&env);
    let commands = env.is_true("GITHUB_ACTIONS");
    panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        let report = error::bug_report(location, &mask::redact(&payload));
        let text = if commands {
            report.to_command()
        } else {
            report.to_plain()
        };
        println!("{}", mask::redact(&text));
    }));

    // `gpu-runner attach-hook SOCKET [STATE]`: the runner's job-started hook on an attached
    // machine, run as the job's user; it asks the attach process for its verdict, and starts the
    // GPU sampler for an accepted job.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("attach-hook") {
        let socket = std::path::PathBuf::from(argv.get(1).cloned().unwrap_or_default());
        // The hooks' folder, for the GPU sampler; without it, no sampler runs.
        let state = argv.get(2).map(std::path::PathBuf::from);
        return ExitCode::from(
            u8::try_from(gpu_runner::attach::hook::client(
                &socket,
                state.as_deref(),
                &env,
            ))
            .unwrap_or(1),
        );
    }
    let attach = argv.first().map(String::as_str) == Some("attach");
    let step = Step::from_program_name(std::env::args_os().next().as_deref());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| error::Error::Unsupported {
                what: format!("could not start the async runtime: {e}"),
                fix: "The container is out of threads or memory; re-run the job.".to_owned(),
            })?;
        if attach {
            runtime.block_on(gpu_runner::attach::run(&argv[1..], &env, &actions))
        } else {
            runtime.block_on(modes::run(&env, &actions, step, chrono::Utc::now()))
        }
    }));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "failed");
            for annotation in e.annotations() {
                actions.annotate(&annotation);
            }
            ExitCode::FAILURE
        }
        // The hook has reported it.
        Err(_) => ExitCode::FAILURE,
    }
}
