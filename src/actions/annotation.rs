//! `::error::`, `::warning::` and `::notice::` annotations.

use super::escape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    pub fn command(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Notice => "Notice",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub level: Level,
    pub title: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub message: String,
}

impl Annotation {
    pub fn new(level: Level, message: impl Into<String>) -> Self {
        Self {
            level,
            title: None,
            file: None,
            line: None,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Level::Error, message)
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Level::Warning, message)
    }

    pub fn notice(message: impl Into<String>) -> Self {
        Self::new(Level::Notice, message)
    }

    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    pub fn file(mut self, file: impl Into<String>, line: Option<u32>) -> Self {
        self.file = Some(file.into());
        self.line = line;
        self
    }

    /// The workflow command, e.g. `::error file=a.yml,line=3,title=T::message`.
    pub fn to_command(&self) -> String {
        let mut props = Vec::new();
        if let Some(file) = &self.file {
            props.push(format!("file={}", escape::property(file)));
        }
        if let Some(line) = self.line {
            props.push(format!("line={line}"));
        }
        if let Some(title) = &self.title {
            props.push(format!("title={}", escape::property(title)));
        }
        let props = if props.is_empty() {
            String::new()
        } else {
            format!(" {}", props.join(","))
        };
        format!(
            "::{}{}::{}",
            self.level.command(),
            props,
            escape::data(&self.message)
        )
    }

    /// How the annotation reads in a terminal, when gpu-runner runs outside a runner.
    pub fn to_plain(&self) -> String {
        let mut s = self.level.word().to_owned();
        if let Some(file) = &self.file {
            s.push_str(&format!(" in {file}"));
            if let Some(line) = self.line {
                s.push_str(&format!(":{line}"));
            }
        }
        if let Some(title) = &self.title {
            s.push_str(&format!(": {title}"));
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_escapes_properties_and_message() {
        let a = Annotation::error("bad value: 100%\nsecond line")
            .title("Invalid input: instance-type, again")
            .file("ci.yml", Some(12));
        assert_eq!(
            a.to_command(),
            "::error file=ci.yml,line=12,title=Invalid input%3A instance-type%2C again::bad value: 100%25%0Asecond line"
        );
    }

    #[test]
    fn command_without_properties_has_no_space() {
        assert_eq!(Annotation::notice("hi").to_command(), "::notice::hi");
        assert_eq!(
            Annotation::warning("w").title("T").to_command(),
            "::warning title=T::w"
        );
    }

    #[test]
    fn plain_form_reads_as_a_sentence() {
        let a = Annotation::error("it broke.").title("Launch failed");
        assert_eq!(a.to_plain(), "Error: Launch failed: it broke.");
    }
}
