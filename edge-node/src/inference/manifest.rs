//! `manifest.toml`: what a model set claims about each model.
//!
//! The runtime checks every claim before it lets a model answer: the file's
//! SHA-256, and the names, element types and shapes of its input and output
//! as the loaded session reports them. A model whose file or claims do not
//! match is disabled with the reason, and its fallback answers instead.
//!
//! A manifest may only name plain files inside its set: a `file` that is a
//! path (a separator, `..`, absolute) is refused when the manifest loads,
//! and one that is not a regular file, or a symlink leading out of the set,
//! when it is resolved ([`ModelSpec::path`]); either is an [`UnsafeFile`]
//! naming the model and the file, and nothing outside the set is read.
//!
//! A model may state the `tolerance` that `hms-edge models check` allows
//! between its outputs and the recorded test vectors (absolute, per value);
//! without it the test vectors' own `tolerance` applies. One that is not a
//! finite number above 0 refuses the manifest ([`BadTolerance`]).

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The manifest file name in a model set's directory.
pub const MANIFEST: &str = "manifest.toml";

/// A manifest names a file that is not a plain file of its model set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "model {model}: file {file:?} {why}; a model set's manifest may only name plain files \
     inside the set"
)]
pub struct UnsafeFile {
    /// The model.
    pub model: String,
    /// The file as the manifest names it.
    pub file: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A manifest states a model's `tolerance` that is not a finite number above 0.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model {model}: tolerance {value} must be a finite number above 0")]
pub struct BadTolerance {
    /// The model.
    pub model: String,
    /// The tolerance as the manifest states it.
    pub value: f64,
}

/// Checks a manifest's `file` as written: one plain file name.
fn plain_name(name: &str) -> Result<(), &'static str> {
    let parts = || name.split(['/', '\\']);
    if name.is_empty() {
        Err("is empty")
    } else if name.starts_with(['/', '\\']) || Path::new(name).is_absolute() {
        Err("is an absolute path")
    } else if parts().any(|p| p == "..") {
        Err("leads out of the set with `..`")
    } else if name.contains(['/', '\\']) {
        Err("is a path, not a file name")
    } else if name.contains('\0') {
        Err("holds a NUL byte")
    } else {
        let mut c = Path::new(name).components();
        match (c.next(), c.next()) {
            (Some(Component::Normal(_)), None) => Ok(()),
            _ => Err("is not a plain file name"),
        }
    }
}

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
    /// Largest absolute difference per value allowed between the model's
    /// outputs and the recorded test vectors; none: the vectors' `tolerance`.
    #[serde(default)]
    pub tolerance: Option<f64>,
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
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for m in &manifest.models {
            plain_name(&m.file)
                .map_err(|why| m.unsafe_file(why))
                .with_context(|| format!("checking {}", path.display()))?;
            if let Some(value) = m.tolerance.filter(|t| !(t.is_finite() && *t > 0.0)) {
                return Err(anyhow::Error::new(BadTolerance {
                    model: m.name.clone(),
                    value,
                }))
                .with_context(|| format!("checking {}", path.display()));
            }
        }
        Ok(manifest)
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }
}

impl ModelSpec {
    fn unsafe_file(&self, why: &'static str) -> UnsafeFile {
        UnsafeFile {
            model: self.name.clone(),
            file: self.file.clone(),
            why,
        }
    }

    /// The model file in the set at `dir`: `file` must be a plain file name
    /// and, when it exists, a regular file or a symlink to a regular file
    /// inside the set (a missing file is the caller's to report).
    pub fn path(&self, dir: &Path) -> Result<PathBuf, UnsafeFile> {
        plain_name(&self.file).map_err(|why| self.unsafe_file(why))?;
        let path = dir.join(&self.file);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            return Ok(path);
        };
        if meta.file_type().is_symlink() {
            let inside = match (std::fs::canonicalize(&path), std::fs::canonicalize(dir)) {
                (Ok(target), Ok(root)) => target.starts_with(root).then_some(target),
                _ => return Err(self.unsafe_file("is a symlink that does not resolve")),
            };
            match inside {
                None => Err(self.unsafe_file("is a symlink leading out of the set")),
                Some(t) if !t.is_file() => {
                    Err(self.unsafe_file("is a symlink to something other than a regular file"))
                }
                Some(_) => Ok(path),
            }
        } else if meta.is_file() {
            Ok(path)
        } else {
            Err(self.unsafe_file("is not a regular file"))
        }
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

/// The model set in `dir` as a whole: its manifest loads, lists models,
/// and every file has the SHA-256 it states; else why not, in one line
/// (each failing file named).
pub fn verify_set(dir: &Path) -> Result<Manifest, String> {
    let manifest = Manifest::load(dir).map_err(|e| format!("{e:#}"))?;
    if manifest.models.is_empty() {
        return Err("the manifest lists no models".into());
    }
    let bad: Vec<String> = check_files(dir, &manifest)
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if bad.is_empty() {
        Ok(manifest)
    } else {
        Err(bad.join("; "))
    }
}

/// Checks every model file of the set in `dir` against its SHA-256.
/// Returns, per model, `Err(reason)` when it does not match.
pub fn check_files(dir: &Path, manifest: &Manifest) -> Vec<(String, Result<(), String>)> {
    manifest
        .models
        .iter()
        .map(|m| {
            let r = match m.path(dir) {
                Err(e) => Err(e.to_string()),
                Ok(path) if !path.exists() => {
                    Err(format!("model file {} is missing", path.display()))
                }
                Ok(path) => match sha256_file(&path) {
                    Ok(h) if h.eq_ignore_ascii_case(&m.sha256) => Ok(()),
                    Ok(h) => Err(format!(
                        "{} has sha256 {h}, the manifest says {}",
                        m.file, m.sha256
                    )),
                    Err(e) => Err(format!("{e:#}")),
                },
            };
            (m.name.clone(), r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(file: &str) -> ModelSpec {
        let tensor = TensorSpec {
            name: "x".into(),
            ty: "float32".into(),
            shape: vec![-1, 1],
        };
        ModelSpec {
            name: "bed_demand".into(),
            file: file.into(),
            sha256: String::new(),
            version: "1".into(),
            input: tensor.clone(),
            output: tensor,
            features: vec![],
            outputs: vec![],
            procedures: vec![],
            surgeons: vec![],
            surgeon_mean_minutes: vec![],
            tolerance: None,
            metrics: toml::Table::new(),
        }
    }

    #[test]
    fn a_manifest_names_only_plain_file_names() {
        let cases = [
            ("bed_demand.onnx", Ok(())),
            ("model..v2.onnx", Ok(())),
            (".hidden", Ok(())),
            ("", Err("is empty")),
            ("../../auth.sqlite", Err("leads out of the set with `..`")),
            ("..", Err("leads out of the set with `..`")),
            ("sub/../x.onnx", Err("leads out of the set with `..`")),
            ("..\\auth.sqlite", Err("leads out of the set with `..`")),
            ("/var/lib/hms/auth.sqlite", Err("is an absolute path")),
            ("\\\\server\\share\\x", Err("is an absolute path")),
            ("sub/x.onnx", Err("is a path, not a file name")),
            ("sub\\x.onnx", Err("is a path, not a file name")),
            (".", Err("is not a plain file name")),
            ("x\0.onnx", Err("holds a NUL byte")),
        ];
        for (name, want) in cases {
            assert_eq!(plain_name(name), want, "{name:?}");
        }
        let e = spec("../../auth.sqlite")
            .path(Path::new("/nonexistent"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "model bed_demand: file \"../../auth.sqlite\" leads out of the set with `..`; a model \
             set's manifest may only name plain files inside the set"
        );
    }

    #[test]
    fn a_model_file_is_a_regular_file_or_a_symlink_to_one_inside_the_set() {
        let tmp = tempfile::tempdir().unwrap();
        let set = tmp.path().join("set");
        std::fs::create_dir(&set).unwrap();
        std::fs::write(set.join("real.onnx"), b"model").unwrap();
        std::fs::write(tmp.path().join("auth.sqlite"), b"secret").unwrap();
        std::fs::create_dir(set.join("dir.onnx")).unwrap();
        std::os::unix::fs::symlink("real.onnx", set.join("inside.onnx")).unwrap();
        std::os::unix::fs::symlink("../auth.sqlite", set.join("outside.onnx")).unwrap();
        std::os::unix::fs::symlink("dir.onnx", set.join("to-dir.onnx")).unwrap();
        std::os::unix::fs::symlink("gone.onnx", set.join("dangling.onnx")).unwrap();
        let why = |file: &str| spec(file).path(&set).map(|_| ()).map_err(|e| e.why);
        assert_eq!(why("real.onnx"), Ok(()));
        assert_eq!(why("inside.onnx"), Ok(()));
        assert_eq!(why("missing.onnx"), Ok(()), "missing: the caller says so");
        assert_eq!(
            why("outside.onnx"),
            Err("is a symlink leading out of the set")
        );
        assert_eq!(why("dir.onnx"), Err("is not a regular file"));
        assert_eq!(
            why("to-dir.onnx"),
            Err("is a symlink to something other than a regular file")
        );
        assert_eq!(
            why("dangling.onnx"),
            Err("is a symlink that does not resolve")
        );
        // Loading refuses a manifest that names a path, before reading any file.
        std::fs::write(
            set.join(MANIFEST),
            "version = \"1\"\n[[model]]\nname = \"bed_demand\"\nfile = \"../auth.sqlite\"\n\
             sha256 = \"\"\nversion = \"1\"\n\
             input = { name = \"x\", type = \"float32\", shape = [-1, 1] }\n\
             output = { name = \"y\", type = \"float32\", shape = [-1, 1] }\n",
        )
        .unwrap();
        let e = Manifest::load(&set).unwrap_err();
        assert!(
            e.chain().any(|c| c.downcast_ref::<UnsafeFile>().is_some()),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("\"../auth.sqlite\""), "{e:#}");
    }

    #[test]
    fn a_model_may_state_its_tolerance_and_only_a_finite_one_above_0() {
        let tmp = tempfile::tempdir().unwrap();
        let manifest = |tolerance: &str| {
            format!(
                "version = \"1\"\n[[model]]\nname = \"bed_demand\"\nfile = \"b.onnx\"\n\
                 sha256 = \"\"\nversion = \"1\"\n{tolerance}\
                 input = {{ name = \"x\", type = \"float32\", shape = [-1, 1] }}\n\
                 output = {{ name = \"y\", type = \"float32\", shape = [-1, 1] }}\n\
                 [[model]]\nname = \"or_duration\"\nfile = \"o.onnx\"\n\
                 sha256 = \"\"\nversion = \"1\"\n\
                 input = {{ name = \"x\", type = \"float32\", shape = [-1, 1] }}\n\
                 output = {{ name = \"y\", type = \"float32\", shape = [-1, 1] }}\n"
            )
        };
        let load = |tolerance: &str| {
            std::fs::write(tmp.path().join(MANIFEST), manifest(tolerance)).unwrap();
            Manifest::load(tmp.path())
        };
        let m = load("tolerance = 2e-3\n").unwrap();
        assert_eq!(m.model("bed_demand").unwrap().tolerance, Some(2e-3));
        assert_eq!(m.model("or_duration").unwrap().tolerance, None, "optional");
        let m = load("tolerance = 1\n").unwrap();
        assert_eq!(
            m.model("bed_demand").unwrap().tolerance,
            Some(1.0),
            "an integer"
        );
        for (bad, value) in [
            ("0.0", 0.0),
            ("-1e-3", -1e-3),
            ("inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
        ] {
            let e = load(&format!("tolerance = {bad}\n")).unwrap_err();
            let why = e.chain().find_map(|c| c.downcast_ref::<BadTolerance>());
            assert_eq!(
                why,
                Some(&BadTolerance {
                    model: "bed_demand".into(),
                    value
                }),
                "{e:#}"
            );
            assert!(
                format!("{e:#}").contains("model bed_demand: tolerance"),
                "{e:#}"
            );
        }
        let e = load("tolerance = nan\n").unwrap_err();
        assert!(
            format!("{e:#}")
                .contains("model bed_demand: tolerance NaN must be a finite number above 0"),
            "{e:#}"
        );
        let e = load("tolerance = \"1e-3\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("tolerance"), "{e:#}");
    }
}
