//! The fuzzer's input: a program. On disk and between fuzzer processes it is the program's
//! text, so corpus and solution files are programs a developer can read and `hotfuzz run`.

use crate::program::desc::Descriptions;
use crate::program::prog::Program;
use libafl::inputs::Input;
use libafl_bolts::HasLen;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;
use std::sync::{Arc, OnceLock};

static DESCRIPTIONS: OnceLock<Arc<Descriptions>> = OnceLock::new();

/// Sets the descriptions programs are printed and parsed with in this process (once; later
/// calls must pass the same descriptions).
pub fn set_descriptions(d: Arc<Descriptions>) {
    let _ = DESCRIPTIONS.set(d);
}

/// The descriptions of this process ([`set_descriptions`], else the embedded ones).
pub fn descriptions() -> Arc<Descriptions> {
    DESCRIPTIONS
        .get_or_init(|| Arc::new(Descriptions::embedded()))
        .clone()
}

/// A program as a LibAFL input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProgInput {
    /// The program.
    pub prog: Program,
}

impl ProgInput {
    /// Wraps a program.
    pub fn new(prog: Program) -> ProgInput {
        ProgInput { prog }
    }

    /// Parses program text (errors name line and column).
    pub fn parse(text: &str) -> Result<ProgInput, crate::program::text::ParseError> {
        Program::parse(text, &descriptions()).map(ProgInput::new)
    }

    /// The program text.
    pub fn text(&self) -> String {
        self.prog.print(&descriptions())
    }
}

impl Serialize for ProgInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for ProgInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProgInput, D::Error> {
        let text = String::deserialize(d)?;
        ProgInput::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl HasLen for ProgInput {
    fn len(&self) -> usize {
        self.prog.ops.len()
    }
}

impl Input for ProgInput {
    fn to_file<P: AsRef<Path>>(&self, path: P) -> Result<(), libafl::Error> {
        // Not LibAFL's write_file_atomic: it does not fsync, and on a full disk it leaves a
        // `.NAME.tmp` behind that makes every later write of NAME fail. This one syncs the
        // file and the directory, and its random temporary file removes itself on failure.
        hotfuzz_vm::cache::atomic_write(path.as_ref(), self.text().as_bytes()).map_err(|e| {
            libafl::Error::os_error(
                std::io::Error::other(e.to_string()),
                "writing a corpus entry",
            )
        })
    }

    fn from_file<P: AsRef<Path>>(path: P) -> Result<ProgInput, libafl::Error> {
        let p = path.as_ref();
        let text = std::fs::read_to_string(p)?;
        ProgInput::parse(&text).map_err(|e| {
            libafl::Error::serialize(format!("{}:{}:{}: {}", p.display(), e.line, e.col, e.msg))
        })
    }

    fn generate_name(&self, _id: Option<libafl::corpus::CorpusId>) -> String {
        format!("{}.prog", self.prog.id(&descriptions()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "virtio_mem_resize(dev=0x0, size=0x10000000)\nr0 = memblock_find(which=\"movable\", nth=0x0)\nmemblock_state(block=r0, state=\"offline\") (thread: 1)\n";

    #[test]
    fn files_and_serde_are_program_text() {
        let i = ProgInput::parse(TEXT).unwrap();
        assert_eq!(i.text(), TEXT);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(i.generate_name(None));
        assert!(f.to_string_lossy().ends_with(".prog"));
        i.to_file(&f).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), TEXT);
        assert_eq!(ProgInput::from_file(&f).unwrap(), i);
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(serde_json::from_str::<ProgInput>(&json).unwrap(), i);
        // postcard is what LLMP uses between fuzzer processes
        let bytes = postcard::to_allocvec(&i).unwrap();
        assert_eq!(postcard::from_bytes::<ProgInput>(&bytes).unwrap(), i);
    }

    #[test]
    fn a_temporary_file_left_by_a_full_disk_does_not_block_a_rewrite() {
        let i = ProgInput::parse(TEXT).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let name = i.generate_name(None);
        // What LibAFL's atomic write left behind when it failed.
        std::fs::write(dir.path().join(format!(".{name}.tmp")), "half").unwrap();
        std::fs::create_dir(dir.path().join(format!(".{name}.tmp.d"))).unwrap();
        i.to_file(dir.path().join(&name)).unwrap();
        i.to_file(dir.path().join(&name)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&name)).unwrap(),
            TEXT
        );
        // A write that fails leaves nothing.
        let sub = dir.path().join("gone");
        std::fs::write(&sub, "a file, not a directory").unwrap();
        assert!(i.to_file(sub.join(&name)).is_err());
        let n = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(n, 4);
    }

    #[test]
    fn a_bad_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.prog");
        std::fs::write(&f, "yield()\nno_such_op(x=0x1)\n").unwrap();
        let e = ProgInput::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("bad.prog:2:1"), "{e}");
    }
}
