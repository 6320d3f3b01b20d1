//! `hms-cloud` configuration (TOML).
//!
//! ```toml
//! region = "eu-west"             # the region this cloud serves (residency)
//! listen = "127.0.0.1:9443"      # HTTP address of the sync service
//! data_dir = "cloud-data"        # registry and SQLite stores; relative to this file
//! backend = "sqlite"             # or "postgres"
//! postgres = "host=127.0.0.1 user=postgres dbname=postgres"   # with backend = "postgres"
//! ```
//!
//! Unknown keys and missing or malformed values are errors naming the file,
//! line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hms_domain::RegionId;
use serde::Deserialize;

/// Store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// One SQLite file per hospital under the data dir.
    Sqlite,
    /// One PostgreSQL database per hospital.
    Postgres,
}

/// The cloud's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// The region served.
    pub region: RegionId,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Data directory (resolved against the file's directory).
    pub data_dir: PathBuf,
    /// Store backend.
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// PostgreSQL maintenance connection string, for `backend = "postgres"`.
    #[serde(default)]
    pub postgres: Option<String>,
}

fn default_backend() -> Backend {
    Backend::Sqlite
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<CloudConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cfg: CloudConfig = toml::from_str(&text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (line, col)
            })
            .unwrap_or((0, 0));
        format!("{}:{line}:{col}: error: {}", path.display(), e.message())
    })?;
    if cfg.backend == Backend::Postgres && cfg.postgres.is_none() {
        return Err(format!(
            "{}: error: backend = \"postgres\" needs `postgres`",
            path.display()
        ));
    }
    if cfg.data_dir.is_relative() {
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data_dir = base.join(&cfg.data_dir);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("cloud.toml");
        std::fs::write(&p, text).expect("write");
        (dir, p)
    }

    #[test]
    fn loads_and_reports_errors_with_line_and_column() {
        let (dir, p) = write("region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n");
        let c = load(&p).expect("valid");
        assert_eq!(c.backend, Backend::Sqlite);
        assert_eq!(c.data_dir, dir.path().join("d"));
        let (_d, p) =
            write("region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\ncolour = 1\n");
        let e = load(&p).expect_err("unknown key");
        assert!(
            e.contains("cloud.toml:4:1: error:") && e.contains("colour"),
            "{e}"
        );
        let (_d, p) = write("region = \"eu west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n");
        let e = load(&p).expect_err("bad region");
        assert!(e.contains("cloud.toml:1:10: error:"), "{e}");
        let (_d, p) = write("region = \"eu-west\"\nlisten = \"x\"\ndata_dir = \"d\"\n");
        let e = load(&p).expect_err("bad address");
        assert!(e.contains("cloud.toml:2:10: error:"), "{e}");
        let (_d, p) = write(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\nbackend = \"postgres\"\n",
        );
        assert!(load(&p).expect_err("no url").contains("needs `postgres`"));
    }
}
