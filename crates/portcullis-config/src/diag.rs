//! Configuration diagnostics: every error names the file, line and column,
//! shows the offending span, and says how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// A source file, shared by all the errors that point into it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as shown to the user.
    pub name: String,
    /// Its text.
    pub text: Arc<String>,
}

impl Source {
    /// A source read from `path`.
    pub fn new(path: &Path, text: String) -> Self {
        Source {
            name: path.display().to_string(),
            text: Arc::new(text),
        }
    }

    /// `file:line:col` of a byte offset (1-based line and column).
    pub fn location(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        format!("{}:{line}:{col}", self.name)
    }
}

/// One configuration problem (boxed: errors travel through many `Result`s).
#[derive(Debug)]
pub struct ConfigError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    message: String,
    location: String,
    source: Option<NamedSource<Arc<String>>>,
    span: Option<SourceSpan>,
    label: String,
    help: Option<String>,
}

impl ConfigError {
    /// An error at a span of a source.
    pub fn at(src: &Source, span: Range<usize>, message: impl Into<String>) -> Self {
        let span = clamp(span, src.text.len());
        ConfigError(Box::new(Inner {
            message: message.into(),
            location: src.location(span.start),
            source: Some(NamedSource::new(src.name.clone(), Arc::clone(&src.text))),
            span: Some(span.into()),
            label: "here".to_owned(),
            help: None,
        }))
    }

    /// An error about a whole file (or a file that could not be read).
    pub fn file(name: &Path, message: impl Into<String>) -> Self {
        ConfigError(Box::new(Inner {
            message: message.into(),
            location: name.display().to_string(),
            source: None,
            span: None,
            label: String::new(),
            help: None,
        }))
    }

    /// Add a help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }

    /// Set the label on the span.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.0.label = label.into();
        self
    }

    /// Rebuild a diagnostic from another library (Cedar) around our source,
    /// keeping its first label's span and its help.
    pub fn from_diagnostic(src: &Source, offset: usize, d: &dyn Diagnostic) -> Self {
        let first: Option<LabeledSpan> = d.labels().and_then(|mut l| l.next());
        let mut message = d.to_string();
        let mut cause = std::error::Error::source(d);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = c.source();
        }
        let mut e = match first {
            Some(l) => {
                let start = offset + l.offset();
                let mut e = ConfigError::at(src, start..start + l.len(), message);
                if let Some(text) = l.label() {
                    e.0.label = text.to_owned();
                }
                e
            }
            None => ConfigError::at(src, offset..offset, message),
        };
        e.0.help = d.help().map(|h| h.to_string());
        e
    }

    /// The message without location.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// `file:line:col`.
    pub fn location(&self) -> &str {
        &self.0.location
    }
}

fn clamp(span: Range<usize>, len: usize) -> Range<usize> {
    let start = span.start.min(len);
    start..span.end.clamp(start, len)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.location, self.0.message)
    }
}

impl std::error::Error for ConfigError {}

impl Diagnostic for ConfigError {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.0.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.0.label.clone()),
            span,
        ))))
    }
}

/// Everything wrong with a configuration (at least one error).
#[derive(Debug)]
pub struct LoadError {
    /// The problems, in the order found.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError { errors: vec![e] }
    }
}

impl From<Vec<ConfigError>> for LoadError {
    fn from(errors: Vec<ConfigError>) -> Self {
        LoadError { errors }
    }
}
