//! A step's stdout as the GitHub log shows it: masked values as `***`, the mask commands hidden,
//! groups as headed blocks, annotations in words, commands off between `stop-commands` markers.

/// A workflow command's data and properties as the runner reads them back.
pub fn unescape(s: &str) -> String {
    s.replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
}

pub fn render(stdout: &str) -> String {
    let mut masks: Vec<String> = Vec::new();
    let mut out = String::new();
    let mut stopped: Option<String> = None;
    let mut depth = 0;
    for line in stdout.lines() {
        let mut text = line.to_owned();
        if let Some(token) = &stopped {
            if line == format!("::{token}::") {
                stopped = None;
                continue;
            }
        } else if let Some(secret) = line.strip_prefix("::add-mask::") {
            masks.push(unescape(secret));
            masks.sort_by_key(|m| std::cmp::Reverse(m.len()));
            continue;
        } else if let Some(token) = line.strip_prefix("::stop-commands::") {
            stopped = Some(token.to_owned());
            continue;
        } else if let Some(title) = line.strip_prefix("::group::") {
            text = format!("▼ {}", unescape(title));
            depth = 1;
            out.push_str(&text);
            out.push('\n');
            continue;
        } else if line == "::endgroup::" {
            depth = 0;
            continue;
        } else if line.starts_with("::debug::") {
            continue;
        } else if let Some((command, message)) = line
            .strip_prefix("::")
            .and_then(|rest| rest.split_once("::"))
        {
            let (kind, props) = command.split_once(' ').unwrap_or((command, ""));
            let title = props
                .split(',')
                .find_map(|p| p.strip_prefix("title="))
                .map(|t| format!("{}: ", unescape(t)))
                .unwrap_or_default();
            let word = match kind {
                "error" => "Error",
                "warning" => "Warning",
                "notice" => "Notice",
                other => other,
            };
            text = format!("{word}: {title}{}", unescape(message));
        }
        for m in &masks {
            if !m.is_empty() {
                text = text.replace(m.as_str(), "***");
            }
        }
        for l in text.lines() {
            if depth > 0 {
                out.push_str("  ");
            }
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
