//! `tollgate test`: runs policy test suites (`tollgate-test.yaml`), one line
//! per case and a summary, as `kyverno test` and `gator verify` do; a
//! failing case fails the command; `--junit` writes the results for CI.

mod suite;

pub use suite::PolicyUnderTest;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::audit::format::escape;
use crate::engine::Engine;
use suite::Loaded;

/// The file name suites are found by.
const SUITE_FILE: &str = "tollgate-test.yaml";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Suite files, or directories searched for `tollgate-test.yaml`
    /// (recursively; `target/` and hidden directories are skipped).
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Directory of compiled policy artifacts (created if missing).
    #[arg(long, env = "TOLLGATE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// One case's result.
struct CaseResult {
    name: String,
    failure: Option<String>,
}

/// One suite's results.
struct SuiteResult {
    path: PathBuf,
    policy: String,
    cases: Vec<CaseResult>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in &args.paths {
        find(path, &mut files).with_context(|| format!("searching {}", path.display()))?;
    }
    anyhow::ensure!(
        !files.is_empty(),
        "no {SUITE_FILE} under {}",
        args.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let engine = super::offline_engine(
        args.cache_dir
            .clone()
            .unwrap_or_else(super::default_cache_dir),
    )?;
    let results: Vec<SuiteResult> = files.iter().map(|file| run_suite(&engine, file)).collect();

    let passed: usize = results
        .iter()
        .map(|s| s.cases.iter().filter(|c| c.failure.is_none()).count())
        .sum();
    let failed: usize = results
        .iter()
        .map(|s| s.cases.iter().filter(|c| c.failure.is_some()).count())
        .sum();
    println!(
        "{passed} passed, {failed} failed ({} suites)",
        results.len()
    );
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(failed == 0, "{failed} case(s) failed");
    Ok(())
}

/// Runs one suite, printing a line per case; a suite that cannot be read
/// or loaded is one failed case.
fn run_suite(engine: &Engine, path: &Path) -> SuiteResult {
    let loaded = match Loaded::read(path) {
        Ok(loaded) => loaded,
        Err(error) => return broken(path, String::new(), &format!("{error:#}")),
    };
    let policy = loaded.policy_name().to_owned();
    println!("{} ({policy})", path.display());
    let mut sets = Vec::new();
    let mut cases = Vec::new();
    for (i, case) in loaded.suite.cases.iter().enumerate() {
        let context = case.context.as_ref().unwrap_or(&loaded.suite.context);
        // Cases with the same cluster share one loaded policy.
        let position = match sets.iter().position(|(c, _)| c == &context) {
            Some(position) => position,
            None => {
                sets.push((context, loaded.load(engine, context)));
                sets.len() - 1
            }
        };
        let failure = match &sets[position].1 {
            Ok(set) => suite::run(&loaded, set, case, i),
            Err(error) => Some(format!("{error:#}")),
        };
        match &failure {
            None => println!("  ok    {}", case.name),
            Some(why) => println!("  FAIL  {}: {why}", case.name),
        }
        cases.push(CaseResult {
            name: case.name.clone(),
            failure,
        });
    }
    SuiteResult {
        path: path.to_owned(),
        policy,
        cases,
    }
}

fn broken(path: &Path, policy: String, why: &str) -> SuiteResult {
    println!("{}", path.display());
    println!("  FAIL  (suite): {why}");
    SuiteResult {
        path: path.to_owned(),
        policy,
        cases: vec![CaseResult {
            name: "(suite)".into(),
            failure: Some(why.to_owned()),
        }],
    }
}

/// Adds `path` (a suite) or the suites under it (a directory), sorted.
fn find(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !path.is_dir() {
        files.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if entry.is_dir() {
            if !name.starts_with('.') && name != "target" {
                find(&entry, files)?;
            }
        } else if name == SUITE_FILE {
            files.push(entry);
        }
    }
    Ok(())
}

/// The results as JUnit XML: a test suite per file, a test case per case.
fn junit(results: &[SuiteResult]) -> String {
    let failures = |s: &SuiteResult| s.cases.iter().filter(|c| c.failure.is_some()).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"tollgate test\" tests=\"{}\" failures=\"{}\">",
        results.iter().map(|s| s.cases.len()).sum::<usize>(),
        results.iter().map(failures).sum::<usize>()
    );
    for suite in results {
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\">",
            escape(&suite.path.display().to_string()),
            suite.cases.len(),
            failures(suite)
        );
        for case in &suite.cases {
            let _ = write!(
                xml,
                "    <testcase name=\"{}\" classname=\"{}\"",
                escape(&case.name),
                escape(&suite.policy)
            );
            match &case.failure {
                None => xml.push_str("/>\n"),
                Some(why) => {
                    let _ = writeln!(
                        xml,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        escape(why),
                        escape(why)
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}
