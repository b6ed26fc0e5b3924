//! A job summary drawn as an SVG picture, the way GitHub shows it on a run's page: the README's
//! picture of what a user gets, made from a real run of the demo (`demo --picture PATH`). Only
//! what gpu-runner's summaries use: headings, paragraphs, bullet lists and tables.

const WIDTH: f32 = 880.0;
const MARGIN: f32 = 24.0;
const FONT: &str = "-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif";
/// About how wide a character of 14 px text is, to wrap lines and size table columns.
const CHAR: f32 = 7.4;

/// Text as it stands in the picture's XML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Markdown's inline marks, dropped: the picture shows the words.
fn plain(text: &str) -> String {
    text.replace("**", "").replace('`', "")
}

fn wrap(text: &str, width: f32) -> Vec<String> {
    let max = (width / CHAR + 0.5).max(8.0) as usize;
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > max {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

struct Canvas {
    body: String,
    y: f32,
}

impl Canvas {
    fn text(&mut self, x: f32, text: &str, size: f32, weight: &str) {
        self.body.push_str(&format!(
            "<text x=\"{x:.0}\" y=\"{:.0}\" font-size=\"{size}\" font-weight=\"{weight}\" fill=\"#1f2328\">{}</text>\n",
            self.y,
            escape(text)
        ));
    }

    fn rule(&mut self, x1: f32, x2: f32, y: f32) {
        self.body.push_str(&format!(
            "<line x1=\"{x1:.0}\" y1=\"{y:.0}\" x2=\"{x2:.0}\" y2=\"{y:.0}\" stroke=\"#d1d9e0\"/>\n"
        ));
    }

    fn table(&mut self, rows: &[Vec<String>]) {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        if columns == 0 {
            return;
        }
        let inner = WIDTH - 2.0 * MARGIN;
        // The first columns as wide as their longest cell (up to half), the last takes the rest.
        let mut widths = vec![0.0f32; columns];
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count() as f32 * CHAR + 20.0);
            }
        }
        let fixed: f32 = widths[..columns - 1]
            .iter()
            .map(|w| w.min(inner / 2.0))
            .sum();
        for w in widths.iter_mut().take(columns - 1) {
            *w = w.min(inner / 2.0);
        }
        widths[columns - 1] = inner - fixed;
        let top = self.y - 16.0;
        for (r, row) in rows.iter().enumerate() {
            let cells: Vec<Vec<String>> = row
                .iter()
                .enumerate()
                .map(|(i, c)| wrap(c, widths[i] - 20.0))
                .collect();
            let height = cells.iter().map(Vec::len).max().unwrap_or(1) as f32 * 20.0 + 12.0;
            let row_top = self.y - 16.0;
            if r % 2 == 1 {
                self.body.push_str(&format!(
                    "<rect x=\"{MARGIN}\" y=\"{row_top:.0}\" width=\"{inner}\" height=\"{height:.0}\" fill=\"#f6f8fa\"/>\n"
                ));
            }
            let mut x = MARGIN + 10.0;
            let y = self.y;
            for (i, lines) in cells.iter().enumerate() {
                for (l, line) in lines.iter().enumerate() {
                    self.y = y + 6.0 + l as f32 * 20.0;
                    self.text(x, line, 14.0, if i == 0 { "600" } else { "400" });
                }
                x += widths[i];
            }
            self.y = y + height;
            self.rule(MARGIN, MARGIN + inner, row_top + height);
        }
        self.body.push_str(&format!(
            "<rect x=\"{MARGIN}\" y=\"{top:.0}\" width=\"{inner}\" height=\"{:.0}\" fill=\"none\" stroke=\"#d1d9e0\"/>\n",
            self.y - 16.0 - top
        ));
        self.y += 8.0;
    }
}

/// The summary `markdown` as a standalone SVG document.
pub fn summary_svg(markdown: &str) -> String {
    let mut canvas = Canvas {
        body: String::new(),
        y: MARGIN + 16.0,
    };
    let mut table: Vec<Vec<String>> = Vec::new();
    for line in markdown.lines().chain(std::iter::once("")) {
        let line = line.trim_end();
        if line.starts_with('|') {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|c| plain(c.trim()))
                .collect();
            let separator = cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'));
            if !separator && cells.iter().any(|c| !c.is_empty()) {
                table.push(cells);
            }
            continue;
        }
        if !table.is_empty() {
            canvas.table(&table);
            table.clear();
        }
        if let Some(heading) = line.strip_prefix('#') {
            let heading = plain(heading.trim_start_matches('#').trim());
            canvas.y += 8.0;
            canvas.text(MARGIN, &heading, 20.0, "600");
            canvas.y += 16.0;
            canvas.rule(MARGIN, WIDTH - MARGIN, canvas.y - 8.0);
            canvas.y += 16.0;
        } else if let Some(item) = line.strip_prefix("- ") {
            for (i, part) in wrap(&plain(item), WIDTH - 2.0 * MARGIN - 20.0)
                .iter()
                .enumerate()
            {
                if i == 0 {
                    canvas.text(MARGIN + 4.0, "•", 14.0, "400");
                }
                canvas.text(MARGIN + 20.0, part, 14.0, "400");
                canvas.y += 20.0;
            }
        } else if !line.trim().is_empty() {
            for part in wrap(&plain(line), WIDTH - 2.0 * MARGIN) {
                canvas.text(MARGIN, &part, 14.0, "400");
                canvas.y += 20.0;
            }
        } else {
            canvas.y += 4.0;
        }
    }
    let height = canvas.y + MARGIN - 16.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"{FONT}\">\n\
         <rect width=\"100%\" height=\"100%\" rx=\"6\" fill=\"#ffffff\" stroke=\"#d1d9e0\"/>\n{}</svg>\n",
        canvas.body
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_becomes_a_picture_of_its_words() {
        let svg = summary_svg(
            "### GPU runner online\n\n|  |  |\n| --- | --- |\n| Label (runs-on) | `gpu-runner-1-1-abc` |\n| GPU | 1 × Tesla T4 <&> |\n\n- a **bold** point\n",
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        for words in [
            ">GPU runner online</text>",
            ">Label (runs-on)</text>",
            ">gpu-runner-1-1-abc</text>",
            ">1 × Tesla T4 &lt;&amp;&gt;</text>",
            ">a bold point</text>",
        ] {
            assert!(svg.contains(words), "{words} in {svg}");
        }
        assert!(!svg.contains(">---</text>"));
    }

    #[test]
    fn long_cells_wrap_within_the_picture() {
        let long = "word ".repeat(80);
        let svg = summary_svg(&format!("| A | {long} |\n| --- | --- |\n"));
        assert!(svg.matches("<text").count() > 3, "{svg}");
    }
}
