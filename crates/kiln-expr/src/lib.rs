//! kiln's expression language: GitHub Actions' `${{ }}` expressions, parsed and evaluated the
//! way GitHub does, for both kiln.yaml stack files and GitHub workflow files.
//!
//! - [`parse`] turns expression text into an [`Expr`], checking names against [`ParseOptions`].
//! - [`evaluate`] runs an [`Expr`] against a [`Host`] that supplies contexts and host functions.
//! - [`Template`] handles strings with embedded `${{ }}`.
//! - [`Expr::references`] lists the context paths an expression reads, for dependency edges.
//!
//! GitHub's own conformance data (in `tests/conformance/`) is the specification; see
//! `tests/conformance.rs`.

mod ast;
mod compare;
mod error;
mod eval;
mod functions;
mod json;
mod lexer;
mod number;
mod parser;
mod template;
mod value;

pub use ast::{Expr, Reference};
pub use error::{EvalError, ParseError, ParseErrorKind, TemplateError};
pub use eval::{Host, MAX_MEMORY_BYTES, MapHost, evaluate};
pub use parser::{FunctionSig, MAX_DEPTH, MAX_LENGTH, ParseOptions, WORKFLOW_FUNCTIONS, parse};
pub use template::{Template, TemplatePart};
pub use value::Value;
