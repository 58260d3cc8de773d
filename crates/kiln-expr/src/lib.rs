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
//!
//! ```
//! use kiln_expr::{MapHost, ParseOptions, Template, Value, evaluate, parse};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut host = MapHost::new();
//! host.insert("vars", Value::from_json(&serde_json::json!({ "region": "eu", "replicas": 3 })));
//! let opts = ParseOptions { named_values: &["vars"], extra_functions: &[] };
//!
//! let expr = parse("vars.replicas > 2 && format('{0}-big', vars.REGION)", &opts)?;
//! assert_eq!(evaluate(&expr, &host)?, Value::from("eu-big"));
//! assert_eq!(expr.references()[0].path, ["vars", "replicas"]);
//!
//! let template = Template::parse("replicas: ${{ vars.replicas }}", &opts)?;
//! assert_eq!(template.render(&host)?, Value::from("replicas: 3"));
//! # Ok(())
//! # }
//! ```
//!
//! Limits: expressions nest at most [`MAX_DEPTH`] (GitHub's 50) deep and are at most
//! [`MAX_LENGTH`] characters; one evaluation builds at most [`MAX_MEMORY_BYTES`] of strings.
//! No input panics.

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
