//! Turning fuzz bytes into structured inputs, without `arbitrary`.

/// Reads small numbers and fields off the front of a fuzz input. Running
/// out of bytes is not an error: numbers read as 0, fields as empty, so
/// every input (even the empty one) is a valid test case.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((first, rest)) => {
                self.rest = rest;
                *first
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Bytes up to (not including) the next `sep`, which is consumed; all
    /// the rest when there is no `sep`.
    pub fn field(&mut self, sep: u8) -> &'a [u8] {
        match self.rest.iter().position(|b| *b == sep) {
            Some(at) => {
                let field = &self.rest[..at];
                self.rest = &self.rest[at + 1..];
                field
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    /// [`Self::field`] as text (invalid UTF-8 replaced).
    pub fn text(&mut self, sep: u8) -> String {
        String::from_utf8_lossy(self.field(sep)).into_owned()
    }

    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}
