//! The local stack's database, as the operator commands open it beside a running `plumbline dev`.

use std::path::Path;

use plumbline::adapters::sqlite::{MAX_RECEIVES_DEFAULT, SqliteStore};

/// Opens the database in `data_dir`; refuses to create one where there is none.
pub fn open(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    anyhow::ensure!(
        data_dir.join("plumbline.db").exists(),
        "no database in {}; is this where `plumbline dev` runs (--data-dir)?",
        data_dir.display()
    );
    Ok(SqliteStore::open(data_dir, MAX_RECEIVES_DEFAULT)?)
}
