//! The runner's file commands (`GITHUB_OUTPUT`, `GITHUB_STATE`): `NAME<<DELIM`, the value, `DELIM`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ProtocolError;

/// Formats one entry. The heredoc form is used for every value, single line or not, as the official
/// toolkit does: the runner accepts it for both, and no value can break out of it.
pub fn format_entry(name: &str, value: &str) -> Result<String, ProtocolError> {
    if name.is_empty() || name.contains(['\n', '\r', '=']) || name.contains("<<") {
        return Err(ProtocolError::BadName {
            name: name.to_owned(),
        });
    }
    let delimiter = loop {
        let candidate = format!("ghadelimiter_{}", uuid::Uuid::new_v4());
        if !name.contains(&candidate) && !value.contains(&candidate) {
            break candidate;
        }
    };
    Ok(format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"))
}

/// Appends `text` to the file in a single write, so that a crash never leaves half an entry.
pub fn append(var: &'static str, path: &Path, text: &str) -> Result<(), ProtocolError> {
    let failed = |source| ProtocolError::Write {
        var,
        path: PathBuf::from(path),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_use_a_random_delimiter_that_is_not_in_the_value() {
        let entry = format_entry("labels", "a\nb").unwrap();
        let mut lines = entry.lines();
        let head = lines.next().unwrap();
        let delim = head.strip_prefix("labels<<").unwrap();
        assert!(delim.starts_with("ghadelimiter_") && delim.len() > 20);
        assert_eq!(lines.collect::<Vec<_>>(), ["a", "b", delim]);
        assert_ne!(
            format_entry("x", "").unwrap(),
            format_entry("x", "").unwrap()
        );
    }

    #[test]
    fn names_that_would_corrupt_the_file_are_refused() {
        for bad in ["", "a\nb", "a=b", "a<<b"] {
            assert!(format_entry(bad, "v").is_err(), "{bad:?}");
        }
    }
}
