//! Linux console output → reports: the entry points, kept under this name for the code that
//! uses them. Classifying report starts is [`super::classify`], streaming [`super::stream`],
//! titling [`super::titles`].

pub use super::stream::{looks_pasted, parse, parse_reader, Parser, MAX_LINE, NOISE_PAGE_DUMPS};
