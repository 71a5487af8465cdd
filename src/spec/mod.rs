//! YAML call specs: parse, validate, render (SPEC 1).
//!
//! Two stages, as ripgrep does for its flags: [`yaml`] reads a document into
//! a positioned tree (every value and key with its line and column), then
//! [`validate`] turns it into the [`model::Spec`] that cannot hold an invalid
//! value. [`render`] makes Graph's create-call request from a spec; [`load`]
//! does it for whole files and directories.

pub mod bodycheck;
pub mod compact;
pub mod diag;
pub mod files;
pub mod incremental;
pub mod joinurl;
pub mod load;
pub mod model;
pub mod render;
pub mod revision;
pub mod schema;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use incremental::IncrementalSet;
pub use load::{FileLoad, Input, SetBuilder, SpecSet, load_file, load_input, load_set};
pub use model::Spec;
pub use validate::Context;
