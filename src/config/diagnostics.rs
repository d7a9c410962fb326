//! Config problems with the place they were found, printed the way compilers do
//! (`PATH:LINE:COLUMN: message`) so editors and CI logs link straight to them.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// 1-based line (0, with column 0: the command line's, [`Diagnostics::COMMAND_LINE`]).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    pub message: String,
}

/// All problems found in one file, in source order.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub path: PathBuf,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            items: Vec::new(),
        }
    }

    /// A problem with the file as a whole (unreadable, not UTF-8): reported at 1:1.
    pub fn whole_file(path: &Path, message: String) -> Self {
        let mut d = Self::new(path);
        d.items.push(Diagnostic {
            severity: Severity::Error,
            line: 1,
            column: 1,
            message,
        });
        d
    }

    /// Where a problem with the command line's flags is recorded: it has no place in the
    /// file, and is printed as the command line's.
    pub const COMMAND_LINE: (usize, usize) = (0, 0);

    /// Record a problem at `(line, column)` (see [`Lines`]), or [`Self::COMMAND_LINE`].
    pub fn push(&mut self, severity: Severity, (line, column): (usize, usize), message: String) {
        self.items.push(Diagnostic {
            severity,
            line,
            column,
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// "2 errors, 1 warning": what a summary line says.
    pub fn tally(&self) -> String {
        let count = |sev: Severity, one: &str| {
            let n = self.items.iter().filter(|d| d.severity == sev).count();
            (n > 0).then(|| format!("{n} {one}{}", if n == 1 { "" } else { "s" }))
        };
        [
            count(Severity::Error, "error"),
            count(Severity::Warning, "warning"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sort by position and drop exact repeats.
    pub(crate) fn finish(&mut self) {
        self.items.sort_by_key(|d| (d.line, d.column));
        self.items.dedup();
    }

    /// One line per diagnostic, e.g. `webhooks.toml:12:1: unknown key ...`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.items.iter().map(|d| {
            let level = match d.severity {
                Severity::Error => "",
                Severity::Warning => "warning: ",
            };
            if (d.line, d.column) == Self::COMMAND_LINE {
                return format!("command line: {level}{}", d.message);
            }
            format!(
                "{}:{}:{}: {level}{}",
                self.path.display(),
                d.line,
                d.column,
                d.message
            )
        })
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&line)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Where each line of a text starts, found once: a position is then a binary search away, so
/// a file with thousands of problems is reported in linear time, not quadratic.
pub struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    pub fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { text, starts }
    }

    /// 1-based line and character column of byte `offset`.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    Lines::new(text).line_column(offset)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "a = 1\nné = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes; the space after it is column 3.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, text.len()), (3, 1));
    }
}
