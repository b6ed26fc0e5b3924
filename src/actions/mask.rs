//! The process-wide list of masked values. The runner masks what we send with `::add-mask::`, but our
//! own stdout fallback, the tracing writer and the panic hook print without the runner's help, so
//! they redact with this list too.

use std::sync::{OnceLock, RwLock};

pub const REDACTED: &str = "***";

fn registry() -> &'static RwLock<Vec<String>> {
    static MASKS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    MASKS.get_or_init(|| RwLock::new(Vec::new()))
}

/// The parts of a secret the runner must mask: the runner masks single lines only, so every
/// non-blank line of a multiline secret (a PEM key) is masked on its own, and the whole value too.
pub fn parts(secret: &str) -> Vec<String> {
    let mut parts: Vec<String> = secret
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if !secret.contains('\n') && !secret.trim().is_empty() && !parts.contains(&secret.to_owned()) {
        parts.push(secret.to_owned());
    }
    parts.dedup();
    parts
}

/// Adds a secret's parts to the list; returns the parts that were not masked before.
pub fn register(secret: &str) -> Vec<String> {
    let mut list = registry().write().unwrap_or_else(|e| e.into_inner());
    let mut new = Vec::new();
    for part in parts(secret) {
        if !list.contains(&part) {
            list.push(part.clone());
            new.push(part);
        }
    }
    // Longest first, so that a secret containing a shorter one is replaced whole.
    list.sort_by_key(|p| std::cmp::Reverse(p.len()));
    new
}

/// Replaces every masked value in `text` with `***`.
pub fn redact(text: &str) -> String {
    let list = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_owned();
    for secret in list.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_multiline_secret_is_a_part() {
        let pem = "-----BEGIN KEY-----\r\nAAAAmask1\n\n  BBBBmask1  \n-----END KEY-----\n";
        assert_eq!(
            parts(pem),
            [
                "-----BEGIN KEY-----",
                "AAAAmask1",
                "BBBBmask1",
                "-----END KEY-----"
            ]
        );
        assert_eq!(parts("  "), Vec::<String>::new());
        assert_eq!(parts("tok-mask1"), ["tok-mask1"]);
    }

    #[test]
    fn redact_replaces_registered_values_longest_first() {
        register("short-mask2");
        register("short-mask2-and-longer");
        assert_eq!(
            redact("a short-mask2-and-longer b short-mask2 c"),
            "a *** b *** c"
        );
        assert!(register("short-mask2").is_empty(), "already registered");
    }
}
