//! Helpers the nightly tests share: checking JUnit against the vendored Jenkins schema with
//! xmllint, rendering a page in headless Chromium (DOM and screenshot), and counting a colour's
//! pixels in the screenshot. (Each test binary includes this module and uses part of it.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The vendored schema (see `harness/testdata/junit/README.md`).
pub fn junit_xsd() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/junit/jenkins-junit-10.xsd")
}

/// A tool the test needs: its path, or `None` with the reason printed (a failure in CI, where
/// `ci/setup.sh` installs it).
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    if found.is_none() {
        let msg =
            format!("{name} is not installed (Debian package {package}; ci/setup.sh installs it)");
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Validates `xml` against the Jenkins JUnit schema; `Err` carries xmllint's complaint.
pub fn validate_junit(xmllint: &Path, xml: &Path) -> Result<(), String> {
    let out = Command::new(xmllint)
        .arg("--noout")
        .arg("--schema")
        .arg(junit_xsd())
        .arg(xml)
        .output()
        .expect("running xmllint");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Renders `page` headless: the DOM after layout, and a full screenshot into `png`.
pub fn render(chromium: &Path, page: &Path, png: &Path, height: u32) -> String {
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let profile = tempfile::tempdir().unwrap();
    let base = |c: &mut Command| {
        c.arg("--headless")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--hide-scrollbars")
            .arg("--no-first-run")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size=1200,{height}"));
    };
    let mut shot = Command::new(chromium);
    base(&mut shot);
    let out = shot
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("running chromium");
    assert!(
        png.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut dom = Command::new(chromium);
    base(&mut dom);
    let out = dom
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("running chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pixels of `png` within `tol` of colour `rgb` (each channel).
pub fn count_color(png_path: &Path, rgb: [u8; 3], tol: u8) -> usize {
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        c => panic!("unexpected screenshot colour type {c:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= tol))
        .count()
}

/// `#rrggbb` as bytes.
pub fn rgb(hex: &str) -> [u8; 3] {
    let h = hex.trim_start_matches('#');
    let b = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).unwrap();
    [b(0), b(2), b(4)]
}

/// Runs the hotfuzz binary in `cwd`: exit code, stdout, stderr.
pub fn hotfuzz(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hotfuzz"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
