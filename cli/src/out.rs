//! Standard output for the operator commands.
//!
//! `println!` panics when standard output is a pipe whose reader has gone
//! (`plumbline events list | head -3`). These writes hand that back as [`StdoutClosed`], which
//! a command returns like any other error and `main` turns into a quiet, successful exit.

use std::fmt;
use std::io::{ErrorKind, Write};

/// The reader of standard output went away: nothing more can be shown, and nothing failed.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `args` and, when `newline`, a line end.
pub fn write(args: fmt::Arguments<'_>, newline: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Whether `err` is a closed standard output rather than a failure.
pub fn is_closed(err: &anyhow::Error) -> bool {
    err.chain().any(<dyn std::error::Error>::is::<StdoutClosed>)
}

/// `println!` that returns `anyhow::Result<()>` instead of panicking on a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*), true)
    };
}

/// `print!` that returns `anyhow::Result<()>` instead of panicking on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*), false)
    };
}

pub(crate) use {out, outln};

/// Rows under a header, each column as wide as its widest cell and two spaces apart; the last
/// column, free text, is not padded. Lines end in `\n`.
pub fn table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.as_ref().chars().count());
        }
    }
    let mut out = String::new();
    push_line(&mut out, &widths, header.iter().copied());
    for row in rows {
        push_line(&mut out, &widths, row.iter().map(AsRef::as_ref));
    }
    out
}

/// One line of [`table`]: each cell padded to its column's width (`{:<}` counts characters).
fn push_line<'a>(out: &mut String, widths: &[usize], cells: impl Iterator<Item = &'a str>) {
    use std::fmt::Write;
    for (cell, width) in cells.zip(widths) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{cell:<width$}  ");
    }
    // The last column's padding, and an empty last cell's, leave nothing behind.
    out.truncate(out.trim_end_matches(' ').len());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_table_is_as_wide_as_its_widest_cells() {
        let rows = vec![
            vec!["01", "payment.partially_refunded", "received 3 times"],
            vec!["0002", "lead.submitted", "—"],
            vec!["3", "order.paid", ""],
        ];
        let text = super::table(&["id", "type", "reason"], &rows);
        assert_eq!(
            text,
            "id    type                        reason\n\
             01    payment.partially_refunded  received 3 times\n\
             0002  lead.submitted              —\n\
             3     order.paid\n"
        );
    }
}
