//! `manifest.toml`: what a model set claims about each model.
//!
//! The runtime checks every claim before it lets a model answer: the file's
//! SHA-256, and the names, element types and shapes of its input and output
//! as the loaded session reports them. A model whose file or claims do not
//! match is disabled with the reason, and its fallback answers instead.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The manifest file name in a model set's directory.
pub const MANIFEST: &str = "manifest.toml";

/// A model set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Manifest {
    /// The set's version.
    pub version: String,
    /// The models.
    #[serde(rename = "model", default)]
    pub models: Vec<ModelSpec>,
}

/// One tensor of a model's signature.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the graph.
    pub name: String,
    /// Element type (`float32`).
    #[serde(rename = "type")]
    pub ty: String,
    /// Shape; -1 is a dynamic dimension.
    pub shape: Vec<i64>,
}

/// One model's claims.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModelSpec {
    /// `bed_demand` or `or_duration`.
    pub name: String,
    /// File name, relative to the manifest.
    pub file: String,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// The model's version.
    pub version: String,
    /// Its input.
    pub input: TensorSpec,
    /// Its output.
    pub output: TensorSpec,
    /// Feature names, in input column order.
    #[serde(default)]
    pub features: Vec<String>,
    /// Output names, in output column order.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// OR model: procedure codes (index = code).
    #[serde(default)]
    pub procedures: Vec<String>,
    /// OR model: surgeon codes (index = code).
    #[serde(default)]
    pub surgeons: Vec<String>,
    /// OR model: each surgeon's mean duration, for the fallback rule.
    #[serde(default)]
    pub surgeon_mean_minutes: Vec<f64>,
    /// Held-out metrics, as written by the training script.
    #[serde(default)]
    pub metrics: toml::Table,
}

impl Manifest {
    /// Reads `dir/manifest.toml`.
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }
}

impl ModelSpec {
    /// The model file, resolved against the manifest's directory.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }

    /// Width of one input row (the last input dimension).
    pub fn input_width(&self) -> usize {
        self.input.shape.last().map_or(0, |d| (*d).max(0) as usize)
    }

    /// Width of one output row (the last output dimension).
    pub fn output_width(&self) -> usize {
        self.output.shape.last().map_or(0, |d| (*d).max(0) as usize)
    }
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hms_domain::event::to_hex(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
    ))
}

/// Checks every model file of the set in `dir` against its SHA-256.
/// Returns, per model, `Err(reason)` when it does not match.
pub fn check_files(dir: &Path, manifest: &Manifest) -> Vec<(String, Result<(), String>)> {
    manifest
        .models
        .iter()
        .map(|m| {
            let path = m.path(dir);
            let r = if !path.exists() {
                Err(format!("model file {} is missing", path.display()))
            } else {
                match sha256_file(&path) {
                    Ok(h) if h.eq_ignore_ascii_case(&m.sha256) => Ok(()),
                    Ok(h) => Err(format!(
                        "{} has sha256 {h}, the manifest says {}",
                        m.file, m.sha256
                    )),
                    Err(e) => Err(format!("{e:#}")),
                }
            };
            (m.name.clone(), r)
        })
        .collect()
}
