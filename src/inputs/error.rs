//! What can be wrong with an input. Every message names the input as the user writes it, shows the
//! value (never a secret's) and says how to fix it.

use std::fmt;

/// The value as it may be shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Value(String),
    /// A secret: its value is never repeated.
    Hidden,
    Unset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Required in this mode but not set; `fix` says how to set it.
    Missing {
        fix: String,
    },
    UnknownMode {
        valid: &'static [&'static str],
        suggestion: Option<&'static str>,
    },
    NotBoolean,
    NotANumber {
        min: u32,
        max: u32,
        unit: &'static str,
    },
    OutOfRange {
        min: u32,
        max: u32,
        unit: &'static str,
    },
    BlankEntry {
        position: usize,
    },
    DuplicateEntry {
        entry: String,
    },
    TooManyEntries {
        count: usize,
        max: usize,
    },
    /// The value, or one entry of a list (`entry`), is not of the expected form.
    Invalid {
        entry: Option<String>,
        expected: String,
        fix: String,
    },
    /// Set together with an input it excludes.
    Conflict {
        other: &'static str,
        fix: &'static str,
    },
    /// Set without an input it needs.
    Requires {
        other: &'static str,
    },
    /// Must be longer than another input's value.
    NotLonger {
        other: &'static str,
        other_value: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub input: &'static str,
    pub value: Shown,
    pub problem: Problem,
}

impl InputError {
    pub fn title(&self) -> String {
        match self.problem {
            Problem::Missing { .. } => format!("Missing input: {}", self.input),
            _ => format!("Invalid input: {}", self.input),
        }
    }

    /// What happened, without the fix.
    pub fn what(&self) -> String {
        let input = self.input;
        let value = match &self.value {
            Shown::Value(v) => format!("\"{v}\""),
            Shown::Hidden | Shown::Unset => "its value".to_owned(),
        };
        match &self.problem {
            Problem::Missing { .. } => format!("{input} is not set"),
            Problem::UnknownMode { .. } => format!("mode {value} is not a mode of gpu-runner"),
            Problem::NotBoolean => format!("{input} is {value}, which is not a boolean"),
            Problem::NotANumber { .. } => {
                format!("{input} is {value}, which is not a whole number")
            }
            Problem::OutOfRange { min, max, unit } => {
                format!("{input} is {value}, outside {min} to {max} {unit}")
            }
            Problem::BlankEntry { position } => {
                format!("{input} has an empty entry (entry {position} of {value})")
            }
            Problem::DuplicateEntry { entry } => {
                format!("{input} lists \"{entry}\" more than once")
            }
            Problem::TooManyEntries { count, max } => {
                format!("{input} has {count} entries; at most {max} are allowed")
            }
            Problem::Invalid {
                entry: Some(entry),
                expected,
                ..
            } => format!("{input} entry \"{entry}\" is not {expected}"),
            Problem::Invalid {
                entry: None,
                expected,
                ..
            } => match self.value {
                Shown::Value(_) => format!("{input} {value} is not {expected}"),
                _ => format!("{input} is not {expected}"),
            },
            Problem::Conflict { other, .. } => format!("{input} and {other} are both set"),
            Problem::Requires { other } => format!("{input} is set but {other} is not"),
            Problem::NotLonger { other, other_value } => format!(
                "{input} is {value}, not longer than {other} ({other_value}): the instance would \
                 end before its runner could come online"
            ),
        }
    }

    /// How to fix it.
    pub fn fix(&self) -> String {
        let input = self.input;
        match &self.problem {
            Problem::Missing { fix } | Problem::Invalid { fix, .. } => fix.clone(),
            Problem::UnknownMode { valid, suggestion } => {
                let mut s = format!("Use one of: {}.", valid.join(", "));
                if let Some(m) = suggestion {
                    s.push_str(&format!(" Did you mean \"{m}\"?"));
                }
                s
            }
            Problem::NotBoolean => {
                "Use true or false (True, TRUE, False and FALSE work too).".to_owned()
            }
            Problem::NotANumber { min, max, unit } | Problem::OutOfRange { min, max, unit } => {
                format!("Set {input} to a whole number of {unit} from {min} to {max}.")
            }
            Problem::BlankEntry { .. } => format!(
                "Remove the extra comma or blank line: entries of {input} are separated by commas \
                 or newlines, and none may be empty."
            ),
            Problem::DuplicateEntry { .. } => format!("List each entry of {input} once."),
            Problem::TooManyEntries { max, .. } => {
                format!("Keep at most {max} entries in {input}.")
            }
            Problem::Conflict { fix, .. } => (*fix).to_owned(),
            Problem::Requires { other } => {
                format!("Set {other} too: {input} and {other} work together.")
            }
            Problem::NotLonger { other, .. } => {
                format!("Make {input} longer than {other}, or shorten {other}.")
            }
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. {}", self.what(), self.fix())
    }
}

impl std::error::Error for InputError {}

/// All input errors found in one pass, so that a user fixes them in one round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} input error(s): {}", .0.len(), .0.iter().map(|e| e.input).collect::<Vec<_>>().join(", "))]
pub struct InputErrors(pub Vec<InputError>);
