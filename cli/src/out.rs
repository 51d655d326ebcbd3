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
    let cells = |row: &[&str]| row.iter().map(|c| c.chars().count()).collect::<Vec<_>>();
    let mut widths = cells(header);
    for row in rows {
        let row: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
        for (width, cell) in widths.iter_mut().zip(cells(&row)) {
            *width = (*width).max(cell);
        }
    }
    let mut out = String::new();
    let mut line = |row: &[&str]| {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        // An empty last cell leaves no padding behind.
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    };
    line(header);
    for row in rows {
        let row: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
        line(&row);
    }
    out
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
