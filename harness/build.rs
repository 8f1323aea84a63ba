//! Builds the in-guest executor as a static binary and embeds it in hotfuzz, so that
//! `cargo run -p hotfuzz` is all it takes. x86_64 is always built (host toolchain,
//! `+crt-static`); ppc64le is built when the Rust target and `powerpc64le-linux-gnu-gcc` are
//! installed (ci/setup-cross.sh), otherwise hotfuzz says how to get it when a ppc64le guest
//! needs it. HOTFUZZ_EXECUTOR_X86_64 / HOTFUZZ_EXECUTOR_PPC64LE may name prebuilt binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let exec_dir = manifest.join("../vm/executor");
    println!("cargo:rerun-if-changed={}", exec_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        exec_dir.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-env-changed=HOTFUZZ_EXECUTOR_X86_64");
    println!("cargo:rerun-if-env-changed=HOTFUZZ_EXECUTOR_PPC64LE");
    println!("cargo:rerun-if-env-changed=HOTFUZZ_NO_PPC64LE_EXECUTOR");

    let x86 = out.join("hotfuzz-executor-x86_64");
    match std::env::var_os("HOTFUZZ_EXECUTOR_X86_64") {
        Some(p) => copy(Path::new(&p), &x86),
        None => build(&exec_dir, &out, "x86_64-unknown-linux-gnu", None, &x86)
            .unwrap_or_else(|e| panic!("building the static x86_64 executor failed: {e}")),
    }
    let ppc = out.join("hotfuzz-executor-ppc64le");
    let ppc_status = match std::env::var_os("HOTFUZZ_EXECUTOR_PPC64LE") {
        Some(p) => {
            copy(Path::new(&p), &ppc);
            "prebuilt".to_string()
        }
        None if std::env::var_os("HOTFUZZ_NO_PPC64LE_EXECUTOR").is_some() => {
            std::fs::write(&ppc, b"").expect("writing placeholder");
            "disabled by HOTFUZZ_NO_PPC64LE_EXECUTOR".into()
        }
        None => match ppc_toolchain() {
            Some(linker) => match build(
                &exec_dir,
                &out,
                "powerpc64le-unknown-linux-gnu",
                Some(&linker),
                &ppc,
            ) {
                Ok(()) => "built".into(),
                Err(e) => {
                    println!("cargo:warning=ppc64le executor not built: {e}");
                    std::fs::write(&ppc, b"").expect("writing placeholder");
                    format!("build failed: {e}")
                }
            },
            None => {
                std::fs::write(&ppc, b"").expect("writing placeholder");
                "toolchain missing (rustup target add powerpc64le-unknown-linux-gnu; apt-get install gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross)".into()
            }
        },
    };
    let code = format!(
        "/// The static x86_64 executor.\npub const EXECUTOR_X86_64: &[u8] = include_bytes!({x86:?});\n\
         /// The static ppc64le executor (empty when it could not be built).\npub const EXECUTOR_PPC64LE: &[u8] = include_bytes!({ppc:?});\n\
         /// Why the ppc64le executor is (not) there.\npub const EXECUTOR_PPC64LE_STATUS: &str = {ppc_status:?};\n"
    );
    std::fs::write(out.join("executors.rs"), code).expect("writing executors.rs");
    seeds(&manifest.join("../corpus"), &out);
}

/// Embeds the repository's seed programs (`corpus/*.prog`) for `hotfuzz fuzz` run anywhere.
fn seeds(corpus: &Path, out: &Path) {
    println!("cargo:rerun-if-changed={}", corpus.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "prog"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut code = String::from(
        "/// The seed programs of the repository's `corpus/`: (file name, text).\npub const SEEDS: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().unwrap().to_string_lossy();
        let abs = f.canonicalize().expect("canonical seed path");
        code.push_str(&format!("    ({name:?}, include_str!({abs:?})),\n"));
    }
    code.push_str("];\n");
    std::fs::write(out.join("seeds.rs"), code).expect("writing seeds.rs");
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
}

/// The cross linker if the ppc64le Rust target and gcc are installed.
fn ppc_toolchain() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--print",
            "target-libdir",
            "--target",
            "powerpc64le-unknown-linux-gnu",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let has_std = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"));
    let linker = "powerpc64le-linux-gnu-gcc";
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(linker).is_file()))
        .unwrap_or(false);
    (has_std && found).then(|| linker.to_string())
}

fn build(
    exec_dir: &Path,
    out: &Path,
    target: &str,
    linker: Option<&str>,
    dest: &Path,
) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // One target directory for the nested builds of every profile (check, debug, release,
    // clippy), so each of them does not rebuild the executor from scratch.
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("executor"),
        None => exec_dir.join("../../target/executor"),
    };
    let _ = out;
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--offline")
        .arg("--manifest-path")
        .arg(exec_dir.join("Cargo.toml"))
        .arg("--target")
        .arg(target)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--bin")
        .arg("hotfuzz-executor");
    // A clean environment for the nested build: no outer flags, wrappers (clippy) or
    // target directory.
    for v in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(v);
    }
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        [
            "-Ctarget-feature=+crt-static",
            "-Cstrip=symbols",
            "-Cdebuginfo=0",
        ]
        .join("\x1f"),
    );
    if let Some(l) = linker {
        cmd.env("CARGO_TARGET_POWERPC64LE_UNKNOWN_LINUX_GNU_LINKER", l);
    }
    let o = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let built = target_dir
        .join(target)
        .join("release")
        .join("hotfuzz-executor");
    std::fs::copy(&built, dest).map_err(|e| format!("copying {}: {e}", built.display()))?;
    Ok(())
}
