//! `cargo xtask gpu-pack` and `cargo xtask gpu-check`: the appliance's
//! models checked on an NVIDIA GPU by a host with no Rust toolchain and no
//! network.
//!
//! `gpu-pack` writes `target/gpu-pack/`: the release `hms-edge` (debug
//! information stripped), the committed model set, the demo hospital's
//! configuration and the CUDA build of ONNX Runtime (the three libraries of
//! the `onnxruntime-gpu` wheel from PyPI), as one `tar.xz` cut into parts of
//! at most 60 MB (`hms-gpu.tar.xz.NN`), with `SHA256SUMS` for the parts,
//! `SHA256SUMS.whole` for the assembled archive and `gpu-check.sh`, which
//! checks, assembles and runs it on the GPU host (see the script's header).
//! `gpu-check` packs and runs the script here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The CUDA build of ONNX Runtime: the `onnxruntime-gpu` wheel (CUDA 13).
const ORT_GPU_VERSION: &str = "1.31.1";
/// Largest part, in bytes: under the 60 MB a part may have, with room for
/// the working tree beside it where a part travels with it.
const PART_BYTES: usize = 55_000_000;
/// The libraries the CUDA build needs from its wheel.
const LIBS: [&str; 3] = [
    "libonnxruntime_providers_cuda.so",
    "libonnxruntime_providers_shared.so",
    "libonnxruntime.so.1.31.1",
];

/// Where the pack goes.
pub fn pack_dir() -> PathBuf {
    super::target_dir().join("gpu-pack")
}

/// Unpacks the CUDA build's libraries into `out` (from the wheel, fetched
/// once into `target/gpu-pack-cache/`).
fn gpu_libraries(out: &Path) -> anyhow::Result<()> {
    let cache = super::target_dir().join("gpu-pack-cache");
    std::fs::create_dir_all(&cache)?;
    let wheel = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("onnxruntime_gpu-{ORT_GPU_VERSION}-"))
                        && n.ends_with(".whl")
                })
            })
    };
    if wheel(&cache).is_none() {
        eprintln!(
            "xtask: fetching the onnxruntime-gpu {ORT_GPU_VERSION} wheel from PyPI (about 260 MB)"
        );
        let mut c = Command::new("python3");
        c.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
            "-d",
        ])
        .arg(&cache)
        .arg(format!("onnxruntime-gpu=={ORT_GPU_VERSION}"));
        super::run(c).context("python3 -m pip download onnxruntime-gpu")?;
    }
    let wheel = wheel(&cache).context("the onnxruntime-gpu wheel was not downloaded")?;
    std::fs::create_dir_all(out)?;
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(
            "import sys, zipfile, os\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             for n in sys.argv[3:]:\n\
             \x20   open(os.path.join(sys.argv[2], n), 'wb').write(z.read('onnxruntime/capi/' + n))\n",
        )
        .arg(&wheel)
        .arg(out)
        .args(LIBS);
    super::run(c).context("unpacking the onnxruntime-gpu wheel")
}

/// The SHA-256 of a file, hex (with the machine's `sha256sum`).
fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned())
}

/// Cuts `archive` into parts of at most [`PART_BYTES`] beside it, named
/// `NAME.00`, `NAME.01`, …; returns their paths.
pub fn split(archive: &Path, part_bytes: usize) -> anyhow::Result<Vec<PathBuf>> {
    let bytes = std::fs::read(archive)?;
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .context("archive name")?;
    let dir = archive.parent().context("archive directory")?;
    let mut parts = vec![];
    for (i, chunk) in bytes.chunks(part_bytes).enumerate() {
        if i > 99 {
            bail!("more than 100 parts");
        }
        let p = dir.join(format!("{name}.{i:02}"));
        std::fs::write(&p, chunk)?;
        parts.push(p);
    }
    Ok(parts)
}

/// `cargo xtask gpu-pack`: see the module doc. Returns the pack directory.
pub fn pack(root: &Path) -> anyhow::Result<PathBuf> {
    let bin = super::build_edge(true)?;
    let out = pack_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let stage = out.join("stage");
    let g = stage.join("hms-gpu");
    for d in ["bin", "lib", "models", "config"] {
        std::fs::create_dir_all(g.join(d))?;
    }
    let mut c = Command::new("objcopy");
    c.arg("--strip-debug").arg(&bin).arg(g.join("bin/hms-edge"));
    super::run(c).context("objcopy --strip-debug (binutils)")?;
    gpu_libraries(&g.join("lib"))?;
    for entry in std::fs::read_dir(root.join("models"))? {
        let p = entry?.path();
        if p.is_file() {
            std::fs::copy(&p, g.join("models").join(p.file_name().context("name")?))?;
        }
    }
    std::fs::copy(
        root.join("config/demo-hospital.toml"),
        g.join("config/demo-hospital.toml"),
    )?;
    let archive = out.join("hms-gpu.tar.xz");
    eprintln!("xtask: compressing the pack (xz -9, a few minutes)");
    let mut c = Command::new("tar");
    c.env("XZ_OPT", "-9 -T0")
        .arg("-cJf")
        .arg(&archive)
        .arg("-C")
        .arg(&stage)
        .arg("hms-gpu");
    super::run(c).context("tar -cJf")?;
    std::fs::remove_dir_all(&stage)?;
    std::fs::write(
        out.join("SHA256SUMS.whole"),
        format!("{}  hms-gpu.tar.xz\n", sha256(&archive)?),
    )?;
    let parts = split(&archive, PART_BYTES)?;
    std::fs::remove_file(&archive)?;
    let mut sums = String::new();
    for p in &parts {
        let name = p.file_name().and_then(|n| n.to_str()).context("part")?;
        sums.push_str(&format!("{}  {name}\n", sha256(p)?));
    }
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    std::fs::copy(
        root.join("xtask/gpu/gpu-check.sh"),
        out.join("gpu-check.sh"),
    )?;
    println!("gpu-pack: {} parts in {}", parts.len(), out.display());
    for p in &parts {
        println!(
            "  {} ({} bytes)",
            p.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            std::fs::metadata(p)?.len()
        );
    }
    println!(
        "copy the directory to the GPU host and run: sh gpu-check.sh [PACK_DIR] [RESULTS_DIR]"
    );
    Ok(out)
}

/// `cargo xtask gpu-check`: packs, then runs the pack's script here (on a
/// machine with a GPU and Rust); exit 2 when there is no GPU.
pub fn check(root: &Path) -> anyhow::Result<()> {
    if !Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("xtask: gpu-check: no NVIDIA GPU here (nvidia-smi failed); nothing measured");
        std::process::exit(2);
    }
    let out = pack(root)?;
    let mut c = Command::new("sh");
    c.arg(out.join("gpu-check.sh"))
        .arg(&out)
        .arg(super::target_dir().join("gpu-check-results"));
    super::run(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_cut_at_the_size_and_join_to_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.xz");
        let bytes: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&archive, &bytes).unwrap();
        let parts = split(&archive, 1000).unwrap();
        let names: Vec<_> = parts
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.tar.xz.00", "a.tar.xz.01", "a.tar.xz.02"]);
        let sizes: Vec<u64> = parts
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|p| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(joined, bytes);
    }
}
