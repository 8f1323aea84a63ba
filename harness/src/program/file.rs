//! Reading program files: parse errors become `FILE:LINE:COL: message`.

use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use anyhow::{anyhow, Context, Result};
use std::io::Read;
use std::path::Path;

/// Reads and parses a program from `path` (`-` for stdin).
pub fn read_program(path: &Path, d: &Descriptions) -> Result<Program> {
    let (name, text) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the program from stdin")?;
        ("<stdin>".to_string(), s)
    } else {
        let s = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let s = String::from_utf8(s).map_err(|e| {
            anyhow!(
                "{}: not UTF-8 text (byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        (path.display().to_string(), s)
    };
    let p =
        Program::parse(&text, d).map_err(|e| anyhow!("{name}:{}:{}: {}", e.line, e.col, e.msg))?;
    if p.ops.is_empty() {
        return Err(anyhow!("{name}: the program has no operations"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn corpus() -> Vec<(String, Program)> {
        let d = Descriptions::embedded();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "prog") {
                v.push((p.display().to_string(), read_program(&p, &d).unwrap()));
            }
        }
        v
    }

    #[test]
    fn corpus_seeds_parse_and_use_every_operation() {
        let d = Descriptions::embedded();
        let seeds = corpus();
        assert!(seeds.len() >= 8);
        let used: BTreeSet<&str> = seeds
            .iter()
            .flat_map(|(_, p)| p.ops.iter().map(|o| o.name.as_str()))
            .collect();
        let missing: Vec<&str> = d
            .ops
            .iter()
            .map(|o| o.name.as_str())
            .filter(|n| !used.contains(n))
            .collect();
        assert!(missing.is_empty(), "no seed uses {missing:?}");
        for (name, p) in &seeds {
            assert_eq!(&Program::parse(&p.print(&d), &d).unwrap(), p, "{name}");
        }
    }

    #[test]
    fn file_errors_carry_the_file_name() {
        let d = Descriptions::embedded();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.prog");
        std::fs::write(&f, "yield()\nmemblock_state(block=0x1, state=0x2)\n").unwrap();
        let e = read_program(&f, &d).unwrap_err().to_string();
        assert_eq!(e, format!("{}:2:33: argument `state` of memblock_state: expects a string (one of memblock_states)", f.display()));
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(read_program(&f, &d)
            .unwrap_err()
            .to_string()
            .contains("no operations"));
        std::fs::write(&f, b"\xff\xfe").unwrap();
        assert!(read_program(&f, &d)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
    }
}
