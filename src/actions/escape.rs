//! Escaping for workflow commands, as the runner unescapes them (`actions/toolkit` command.ts).

/// Escapes the message part of a workflow command (after the second `::`).
pub fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value (`title=`, `file=`): also `:` and `,`, which delimit properties.
pub fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_escapes_percent_first_and_line_breaks() {
        assert_eq!(data("50% done\r\nnext"), "50%25 done%0D%0Anext");
        assert_eq!(data("a:b,c"), "a:b,c");
    }

    #[test]
    fn property_escapes_delimiters_too() {
        assert_eq!(property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }
}
