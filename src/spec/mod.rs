//! YAML call specs: parse, validate, render.

pub mod files;
