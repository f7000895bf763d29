//! An indenting text buffer for generated code.

/// Accumulates lines of code at a tracked indentation (four spaces a level).
#[derive(Debug, Default)]
pub(crate) struct Code {
    buf: String,
    indent: usize,
}

impl Code {
    /// Appends one line at the current indentation; an empty `text` appends a
    /// blank line without trailing spaces.
    pub fn line(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if !text.is_empty() {
            for _ in 0..self.indent {
                self.buf.push_str("    ");
            }
            self.buf.push_str(text);
        }
        self.buf.push('\n');
    }

    /// Appends `head` and opens a block: the following lines are indented.
    pub fn open(&mut self, head: impl AsRef<str>) {
        self.line(head);
        self.indent += 1;
    }

    /// Indents the following lines one level, writing nothing (after a
    /// block head spread over several lines).
    pub fn indent(&mut self) {
        self.indent += 1;
    }

    /// Closes a block opened with [`Code::open`] with `tail` (e.g. `}`).
    pub fn close(&mut self, tail: impl AsRef<str>) {
        self.indent = self.indent.saturating_sub(1);
        self.line(tail);
    }

    /// Appends `/// ...` lines for a doc comment, if there is one.
    pub fn doc(&mut self, doc: Option<&str>) {
        if let Some(doc) = doc {
            for l in doc.lines().map(str::trim_end) {
                if l.is_empty() {
                    self.line("///");
                } else {
                    self.line(format!("/// {l}"));
                }
            }
        }
    }

    /// The code written so far.
    pub fn finish(self) -> String {
        self.buf
    }
}
