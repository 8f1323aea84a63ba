//! The program stage: operation descriptions, the program model and its text format,
//! generation and mutation against a model of the guest's state. Nothing here talks to a
//! guest.

pub mod desc;
pub mod gen;
pub mod mutate;
pub mod prog;
pub mod state;
pub mod text;
