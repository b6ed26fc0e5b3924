//! Markdown for the job summary (`GITHUB_STEP_SUMMARY`), and the cap on its size.

/// GitHub refuses a step summary above this size; we stay below it.
pub const LIMIT: u64 = 128 * 1024;

pub const TRUNCATED: &str = "\n\n> **Summary truncated**: GitHub shows at most 128 KiB per step. The step log has everything.\n";

/// Cuts `markdown` so that it fits in `room` bytes together with the truncation note, at a line end
/// when there is one. Returns `None` when even the note does not fit.
pub fn fit(markdown: &str, room: u64) -> Option<String> {
    if markdown.len() as u64 <= room {
        return Some(markdown.to_owned());
    }
    let budget = usize::try_from(room).ok()?.checked_sub(TRUNCATED.len())?;
    let mut cut = budget.min(markdown.len());
    while !markdown.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &markdown[..cut];
    let head = head.rfind('\n').map_or(head, |i| &head[..i]);
    Some(format!("{head}{TRUNCATED}"))
}

/// A small builder for the summary's markdown; every cell and text is escaped so that values
/// cannot break the layout.
#[derive(Debug, Default, Clone)]
pub struct Markdown {
    text: String,
}

impl Markdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn heading(mut self, level: u8, text: &str) -> Self {
        let hashes = "#".repeat(level.clamp(1, 6) as usize);
        self.text
            .push_str(&format!("{hashes} {}\n\n", inline(text)));
        self
    }

    pub fn paragraph(mut self, text: &str) -> Self {
        self.text.push_str(&format!("{}\n\n", inline(text)));
        self
    }

    /// Raw markdown the caller built from trusted parts (our own words, escaped values).
    pub fn raw(mut self, markdown: &str) -> Self {
        self.text.push_str(markdown);
        self.text.push_str("\n\n");
        self
    }

    pub fn table<R: AsRef<[String]>>(mut self, header: &[&str], rows: &[R]) -> Self {
        let cells = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
        self.text
            .push_str(&cells(header.iter().map(|h| cell(h)).collect()));
        self.text
            .push_str(&cells(header.iter().map(|_| "---".to_owned()).collect()));
        for row in rows {
            self.text
                .push_str(&cells(row.as_ref().iter().map(|c| cell(c)).collect()));
        }
        self.text.push('\n');
        self
    }

    /// A fenced block; the fence is longer than any run of backticks in the text.
    pub fn code(mut self, lang: &str, text: &str) -> Self {
        let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        self.text
            .push_str(&format!("{fence}{lang}\n{}\n{fence}\n\n", text.trim_end()));
        self
    }

    pub fn build(self) -> String {
        self.text
    }
}

/// Text that renders as itself: markdown and HTML characters are escaped, lines joined.
pub fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// A table cell: escaped as [`inline`] text, so that a value stays in its cell and renders as
/// itself (a job name of `[x](https://…)` is no link).
fn cell(text: &str) -> String {
    inline(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_text_fits_unchanged() {
        assert_eq!(fit("abc", 10).as_deref(), Some("abc"));
    }

    #[test]
    fn large_text_is_cut_at_a_line_end_with_a_note() {
        let text = "line one\nline two\nline three\n".repeat(10);
        let room = (TRUNCATED.len() + 25) as u64;
        let out = fit(&text, room).unwrap();
        assert!(out.len() as u64 <= room);
        assert_eq!(out, format!("line one\nline two{TRUNCATED}"));
    }

    #[test]
    fn cut_respects_utf8_boundaries() {
        let text = "ü".repeat(100);
        let out = fit(&text, (TRUNCATED.len() + 7) as u64).unwrap();
        assert!(out.starts_with("üüü") && out.ends_with(TRUNCATED));
    }

    #[test]
    fn no_room_for_the_note_means_nothing() {
        assert_eq!(fit("abcdef", 3), None);
    }

    #[test]
    fn strangers_text_in_a_cell_is_no_link_no_html_and_no_new_row() {
        let md = Markdown::new()
            .table(
                &["Job"],
                &[vec![
                    "[free GPUs](https://evil.example) <img src=x> |\n| x".to_owned(),
                ]],
            )
            .build();
        assert_eq!(
            md.lines().nth(2),
            Some("| \\[free GPUs\\](https://evil.example) \\<img src=x\\> \\| \\| x |")
        );
    }

    #[test]
    fn markdown_builder_escapes_values() {
        let md = Markdown::new()
            .heading(3, "GPU runner *ready*")
            .table(
                &["Item", "Value"],
                &[vec!["label".to_owned(), "a|b".to_owned()]],
            )
            .code("sh", "echo ```")
            .build();
        assert_eq!(
            md,
            "### GPU runner \\*ready\\*\n\n| Item | Value |\n| --- | --- |\n| label | a\\|b |\n\n````sh\necho ```\n````\n\n"
        );
    }
}
