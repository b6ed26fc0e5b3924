//! The GitHub Actions runner protocol: file commands (outputs, state, step summary) and workflow
//! commands on stdout (masks, annotations, groups, debug). The only module that speaks it.
//!
//! Under a runner (`GITHUB_ACTIONS=true`) it writes workflow commands; run by hand, it prints the
//! same information readably, and every file whose variable is unset goes to stdout too.

pub mod annotation;
pub mod escape;
pub mod file_command;
pub mod mask;
pub mod summary;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use annotation::{Annotation, Level};
pub use summary::Markdown;

use crate::env::Env;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("could not write to {var} ({path}): {source}")]
    Write {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("\"{name}\" cannot be used as an output or state name")]
    BadName { name: String },
}

impl ProtocolError {
    pub fn hint(&self) -> String {
        match self {
            ProtocolError::Write { var, .. } => format!(
                "The runner creates {var} for every step. If you set it yourself, point it at a \
                 writable file; otherwise check that the runner's temp folder is writable and has space."
            ),
            ProtocolError::BadName { .. } => {
                "This is a bug in gpu-runner; please report it.".to_owned()
            }
        }
    }
}

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Masks secrets in the job's log: `::add-mask::` for the runner, and our own redaction.
#[derive(Clone)]
pub struct Masker {
    commands: bool,
    out: Sink,
}

impl Masker {
    pub fn add_mask(&self, secret: &str) {
        let new = mask::register(secret);
        if self.commands && !new.is_empty() {
            // Not through `emit`: the value must reach the runner unredacted.
            let text: String = new
                .iter()
                .map(|p| format!("::add-mask::{}\n", escape::data(p)))
                .collect();
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
}

pub struct Actions {
    /// Workflow commands (`::x::`) when under a runner, plain text otherwise.
    commands: bool,
    debug: bool,
    out: Sink,
    output_file: Option<PathBuf>,
    state_file: Option<PathBuf>,
    summary_file: Option<PathBuf>,
    /// Set once the summary was cut: later parts go to the log only, not as more fragments.
    summary_full: AtomicBool,
}

impl Actions {
    pub fn from_env(env: &Env) -> Self {
        Self::with_writer(env, Box::new(std::io::stdout()))
    }

    pub fn with_writer(env: &Env, out: Box<dyn Write + Send>) -> Self {
        let path = |name| env.non_empty(name).map(PathBuf::from);
        Self {
            commands: env.is_true("GITHUB_ACTIONS"),
            debug: env.non_empty("RUNNER_DEBUG") == Some("1"),
            out: Arc::new(Mutex::new(out)),
            output_file: path("GITHUB_OUTPUT"),
            state_file: path("GITHUB_STATE"),
            summary_file: path("GITHUB_STEP_SUMMARY"),
            summary_full: AtomicBool::new(false),
        }
    }

    /// Writes lines to stdout with masked values redacted. Output errors (a closed pipe) are
    /// ignored: nothing useful can be done about them, and they must not mask the real outcome.
    fn emit(&self, text: &str) {
        let text = mask::redact(text);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// A line for the log. Values in it may come from strangers (a job's name, a branch): a line
    /// of it that would read as a workflow command (the runner trims leading blanks, then looks
    /// for `::`) is shown as text instead.
    pub fn info(&self, line: &str) {
        if line.lines().any(|l| l.trim_start().starts_with("::")) {
            self.verbatim(line);
        } else {
            self.emit(line);
        }
    }

    /// Text that may contain anything (a user's script, a rendered file): workflow commands inside it
    /// are switched off so that a line starting with `::` cannot act on the runner.
    pub fn verbatim(&self, text: &str) {
        if self.commands {
            let token = uuid::Uuid::new_v4().simple().to_string();
            self.emit(&format!("::stop-commands::{token}\n{text}\n::{token}::"));
        } else {
            self.emit(text);
        }
    }

    /// Masks a secret in the log: each line of it (the runner masks single lines only).
    pub fn add_mask(&self, secret: &str) {
        self.masker().add_mask(secret);
    }

    /// A handle that masks secrets from another task (such as credentials refreshed later).
    pub fn masker(&self) -> Masker {
        Masker {
            commands: self.commands,
            out: self.out.clone(),
        }
    }

    pub fn annotate(&self, annotation: &Annotation) {
        if self.commands {
            self.emit(&annotation.to_command());
        } else {
            self.emit(&annotation.to_plain());
        }
    }

    pub fn debug(&self, message: &str) {
        if self.commands {
            self.emit(&format!("::debug::{}", escape::data(message)));
        } else if self.debug {
            self.emit(&format!("debug: {message}"));
        }
    }

    /// Opens a collapsible group in the log; it closes when the guard is dropped, on every path.
    #[must_use = "the group closes when this guard is dropped"]
    pub fn group(&self, title: &str) -> Group<'_> {
        if self.commands {
            self.emit(&format!("::group::{}", escape::data(title)));
        } else {
            self.emit(&format!("── {title}"));
        }
        Group { actions: self }
    }

    pub fn set_output(&self, name: &str, value: &str) -> Result<(), ProtocolError> {
        self.key_value(
            "GITHUB_OUTPUT",
            self.output_file.as_deref(),
            "output",
            name,
            value,
        )
    }

    pub fn save_state(&self, name: &str, value: &str) -> Result<(), ProtocolError> {
        self.key_value(
            "GITHUB_STATE",
            self.state_file.as_deref(),
            "state",
            name,
            value,
        )
    }

    fn key_value(
        &self,
        var: &'static str,
        file: Option<&Path>,
        kind: &str,
        name: &str,
        value: &str,
    ) -> Result<(), ProtocolError> {
        let entry = file_command::format_entry(name, value)?;
        match file {
            Some(path) => file_command::append(var, path, &entry),
            None if value.contains('\n') => {
                let indented: String = value.lines().map(|l| format!("  {l}\n")).collect();
                self.emit(&format!("{kind} {name}:\n{indented}"));
                Ok(())
            }
            None => {
                self.emit(&format!("{kind} {name}={value}"));
                Ok(())
            }
        }
    }

    /// Appends markdown to the job summary, staying under GitHub's size cap.
    pub fn append_summary(&self, markdown: &str) -> Result<(), ProtocolError> {
        let Some(path) = &self.summary_file else {
            self.emit(&format!("── job summary\n{}", markdown.trim_end()));
            return Ok(());
        };
        let used = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let fitted = if self.summary_full.load(Ordering::Relaxed) {
            None
        } else {
            summary::fit(markdown, summary::LIMIT.saturating_sub(used))
        };
        match fitted {
            Some(text) => {
                if text.len() < markdown.len() {
                    self.summary_full.store(true, Ordering::Relaxed);
                }
                file_command::append("GITHUB_STEP_SUMMARY", path, &text)
            }
            None => {
                self.summary_full.store(true, Ordering::Relaxed);
                self.debug("the job summary is full; this part is only in the log");
                self.emit(markdown);
                Ok(())
            }
        }
    }
}

pub struct Group<'a> {
    actions: &'a Actions,
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if self.actions.commands {
            self.actions.emit("::endgroup::");
        } else {
            self.actions.emit("");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn actions(vars: &[(&str, &str)]) -> (Actions, Buf) {
        let buf = Buf::default();
        let env: Env = vars.iter().copied().collect();
        (Actions::with_writer(&env, Box::new(buf.clone())), buf)
    }

    #[test]
    fn under_a_runner_secrets_are_masked_line_by_line_and_redacted_after() {
        let (a, out) = actions(&[("GITHUB_ACTIONS", "true")]);
        a.add_mask("line-one-mask3\nline%two-mask3");
        a.info("token is line-one-mask3");
        assert_eq!(
            out.text(),
            "::add-mask::line-one-mask3\n::add-mask::line%25two-mask3\ntoken is ***\n"
        );
    }

    #[test]
    fn by_hand_masks_are_silent_but_still_redact() {
        let (a, out) = actions(&[]);
        a.add_mask("by-hand-mask4");
        a.annotate(&Annotation::error("saw by-hand-mask4").title("T"));
        assert_eq!(out.text(), "Error: T: saw ***\n");
    }

    #[test]
    fn groups_close_on_drop_even_on_early_return() {
        let (a, out) = actions(&[("GITHUB_ACTIONS", "true")]);
        let inner = || -> Result<(), ()> {
            let _g = a.group("Plan");
            a.info("inside");
            Err(())
        };
        assert!(inner().is_err());
        assert_eq!(out.text(), "::group::Plan\ninside\n::endgroup::\n");
    }

    #[test]
    fn debug_is_a_command_under_a_runner_and_hidden_by_hand_unless_asked() {
        let (a, out) = actions(&[("GITHUB_ACTIONS", "true")]);
        a.debug("x\ny");
        assert_eq!(out.text(), "::debug::x%0Ay\n");
        let (a, out) = actions(&[]);
        a.debug("hidden");
        assert_eq!(out.text(), "");
        let (a, out) = actions(&[("RUNNER_DEBUG", "1")]);
        a.debug("shown");
        assert_eq!(out.text(), "debug: shown\n");
    }

    #[test]
    fn verbatim_text_cannot_issue_commands() {
        let (a, out) = actions(&[("GITHUB_ACTIONS", "true")]);
        a.verbatim("::add-mask::x");
        let text = out.text();
        let lines: Vec<_> = text.lines().collect();
        let token = lines[0].strip_prefix("::stop-commands::").unwrap();
        assert_eq!(lines[1], "::add-mask::x");
        assert_eq!(lines[2], format!("::{token}::"));
    }

    #[test]
    fn a_log_line_with_a_strangers_text_cannot_issue_commands() {
        let (a, out) = actions(&[("GITHUB_ACTIONS", "true")]);
        a.info("cancel run 7: its job \"x\n  ::add-mask::github_pat\" waited");
        let text = out.text();
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("::stop-commands::"), "{text}");
        assert_eq!(lines[2], "  ::add-mask::github_pat\" waited");
        a.info("plain: a::b");
        assert!(out.text().ends_with("\nplain: a::b\n"));
    }

    #[test]
    fn outputs_and_state_go_to_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let out_file = dir.path().join("out");
        let state_file = dir.path().join("state");
        let (a, stdout) = actions(&[
            ("GITHUB_OUTPUT", out_file.to_str().unwrap()),
            ("GITHUB_STATE", state_file.to_str().unwrap()),
        ]);
        a.set_output("label", "gpu-1").unwrap();
        a.set_output("labels", "a\nb").unwrap();
        a.save_state("phase", "launched").unwrap();
        let out = std::fs::read_to_string(out_file).unwrap();
        assert_eq!(out.matches("<<ghadelimiter_").count(), 2);
        assert!(out.contains("\ngpu-1\n") && out.contains("\na\nb\n"));
        assert!(
            std::fs::read_to_string(state_file)
                .unwrap()
                .starts_with("phase<<")
        );
        assert_eq!(stdout.text(), "");
    }

    #[test]
    fn without_files_everything_is_printed_readably() {
        let (a, out) = actions(&[]);
        a.set_output("label", "gpu-1").unwrap();
        a.set_output("labels", "a\nb").unwrap();
        a.save_state("phase", "launched").unwrap();
        a.append_summary("### Done\n").unwrap();
        assert_eq!(
            out.text(),
            "output label=gpu-1\noutput labels:\n  a\n  b\nstate phase=launched\n── job summary\n### Done\n"
        );
    }

    #[test]
    fn the_summary_file_never_grows_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary");
        let (a, _) = actions(&[("GITHUB_STEP_SUMMARY", path.to_str().unwrap())]);
        let chunk = "x".repeat(1000) + "\n";
        for _ in 0..200 {
            a.append_summary(&chunk).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() as u64 <= summary::LIMIT, "{}", text.len());
        assert!(text.len() as u64 > summary::LIMIT - 2000);
        assert_eq!(text.matches("Summary truncated").count(), 1);
    }

    #[test]
    fn an_unwritable_file_is_an_error_naming_the_variable() {
        let (a, _) = actions(&[("GITHUB_OUTPUT", "/nonexistent/dir/out")]);
        let err = a.set_output("label", "x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("could not write to GITHUB_OUTPUT (/nonexistent/dir/out)")
        );
    }
}
