//! What `meshplay test` found, and the three ways it is written: for
//! people (a line a test, each failure with its file, line, expected and
//! actual, and what the handler logged), as JSON (`--json`), and as JUnit
//! XML (`--junit FILE`) for a CI's test view.

use crate::author::logbook::Logged;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// Every file's tests.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The files, in the order they ran.
    pub files: Vec<FileReport>,
    /// How long the whole run took.
    pub seconds: f64,
}

/// One test file.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// Its path.
    pub file: String,
    /// The plugin it tests.
    pub plugin: String,
    /// Why none of its tests ran (the plugin does not build, the file does
    /// not load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its tests.
    pub tests: Vec<TestReport>,
}

/// One test.
#[derive(Debug, Serialize)]
pub struct TestReport {
    /// Its name, with its `describe` names before it.
    pub name: String,
    /// The line it starts on.
    pub line: u32,
    /// Passed or failed, and why.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it ran (its host's start and stop not counted).
    pub ms: f64,
    /// What the plugin's handlers logged while it ran.
    pub logs: Vec<Logged>,
}

/// How a test ended.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", content = "failure", rename_all = "snake_case")]
pub enum Outcome {
    /// Every expectation held.
    Passed,
    /// An expectation did not hold, or the test raised.
    Failed(Failure),
}

/// Why a test failed.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The line of the expectation, when one failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// What it expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

impl Failure {
    /// A test that raised (or timed out).
    pub fn message(message: String) -> Self {
        Failure {
            message,
            line: None,
            expected: None,
            actual: None,
        }
    }

    /// An expectation the prelude recorded (`message`, `line`,
    /// `expected`, `actual`).
    pub fn expectation(recorded: &serde_json::Value) -> Self {
        let text = |k: &str| recorded.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        Failure {
            message: text("message").unwrap_or_default(),
            line: recorded
                .get("line")
                .and_then(|l| l.as_u64())
                .map(|l| l as u32),
            expected: text("expected"),
            actual: text("actual"),
        }
    }
}

impl FileReport {
    /// An empty report for `file`.
    pub fn new(file: &Path) -> Self {
        FileReport {
            file: file.display().to_string(),
            plugin: String::new(),
            error: None,
            tests: Vec::new(),
        }
    }

    fn failed(&self) -> usize {
        self.tests
            .iter()
            .filter(|t| matches!(t.outcome, Outcome::Failed(_)))
            .count()
    }
}

impl Report {
    /// Tests that passed.
    pub fn passed(&self) -> usize {
        self.files.iter().map(|f| f.tests.len() - f.failed()).sum()
    }

    /// Tests that failed, and files that could not run (each counts one).
    pub fn failed(&self) -> usize {
        self.files
            .iter()
            .map(|f| f.failed() + usize::from(f.error.is_some()))
            .sum()
    }

    /// The closing line: `3 passed, 1 failed (2 files, 1.2 s)`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed ({} files, {:.1} s)",
            self.passed(),
            self.failed(),
            self.files.len(),
            self.seconds
        )
    }

    /// As JUnit XML: a `testsuite` a file, a `testcase` a test.
    pub fn junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"meshplay test\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
            self.passed() + self.failed(),
            self.failed(),
            self.seconds
        );
        for f in &self.files {
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\">",
                xml(&f.file),
                f.tests.len() + usize::from(f.error.is_some()),
                f.failed() + usize::from(f.error.is_some())
            );
            if let Some(e) = &f.error {
                let _ = writeln!(
                    out,
                    "    <testcase name=\"(load)\" classname=\"{}\" file=\"{}\">",
                    xml(&f.plugin),
                    xml(&f.file)
                );
                let _ = writeln!(
                    out,
                    "      <failure message=\"{}\"/>\n    </testcase>",
                    xml(e)
                );
            }
            for t in &f.tests {
                let _ = write!(
                    out,
                    "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\" time=\"{:.3}\"",
                    xml(&t.name),
                    xml(&f.plugin),
                    xml(&f.file),
                    t.line,
                    t.ms / 1000.0
                );
                match &t.outcome {
                    Outcome::Passed => out.push_str("/>\n"),
                    Outcome::Failed(why) => {
                        let _ = writeln!(
                            out,
                            ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                            xml(&why.message),
                            xml(&failure_text(&f.file, why))
                        );
                    }
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

/// A failure as people read it: `file:line: message`, then expected and
/// actual.
pub fn failure_text(file: &str, why: &Failure) -> String {
    let mut out = match why.line {
        Some(line) => format!("{file}:{line}: {}", why.message),
        None => why.message.clone(),
    };
    if let Some(e) = &why.expected {
        let _ = write!(out, "\n  expected: {e}");
    }
    if let Some(a) = &why.actual {
        let _ = write!(out, "\n  actual:   {a}");
    }
    out
}

/// One file's lines for people.
pub fn human(f: &FileReport) -> String {
    let mut out = format!(
        "{} ({})\n",
        f.file,
        if f.plugin.is_empty() { "?" } else { &f.plugin }
    );
    if let Some(e) = &f.error {
        let _ = writeln!(out, "  ✗ did not run: {e}");
    }
    for t in &f.tests {
        match &t.outcome {
            Outcome::Passed => {
                let _ = writeln!(out, "  ✓ {} ({:.0} ms)", t.name, t.ms);
            }
            Outcome::Failed(why) => {
                let _ = writeln!(out, "  ✗ {} ({:.0} ms)", t.name, t.ms);
                for line in failure_text(&f.file, why).lines() {
                    let _ = writeln!(out, "      {line}");
                }
                if !t.logs.is_empty() {
                    let _ = writeln!(out, "      the handler logged:");
                    for l in &t.logs {
                        let _ = writeln!(out, "        [{}] {}", l.level, l.line);
                    }
                }
            }
        }
    }
    out
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}
