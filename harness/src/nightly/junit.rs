//! JUnit XML for CI systems (Jenkins, GitLab): one test suite for the regression entries (a
//! test case each: passed, failed with the report text, skipped with the reason, or an error
//! when the guests did not run) and one for fuzzing (the campaign itself, then a failing
//! test case per new or regressed bug with its report text). It is valid against the schema
//! Jenkins reads (`harness/testdata/junit/`, checked in the tests); text that XML cannot
//! carry (console control characters) is replaced.

use super::summary::{Class, Night, StageState, Verdict};
use std::fmt::Write as _;

/// Escapes text for XML content and attribute values; characters XML 1.0 forbids (NUL,
/// escape sequences' ESC, ...) become `\u{fffd}`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A timestamp as JUnit has it (`2026-12-02T18:40:00`, UTC, no zone).
fn timestamp(rfc3339: &str) -> String {
    rfc3339
        .trim_end_matches('Z')
        .split('.')
        .next()
        .unwrap_or(rfc3339)
        .chars()
        .take(19)
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

struct Case {
    classname: String,
    name: String,
    time: f64,
    /// (element, type, message, body)
    outcome: Option<(&'static str, String, String, String)>,
    out: String,
}

fn suite(xml: &mut String, name: &str, n: &Night, cases: &[Case], props: &[(String, String)]) {
    let count = |el: &str| {
        cases
            .iter()
            .filter(|c| c.outcome.as_ref().is_some_and(|o| o.0 == el))
            .count()
    };
    let time: f64 = cases.iter().map(|c| c.time).sum();
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time:.3}\" timestamp=\"{}\" hostname=\"{}\">",
        escape(name),
        cases.len(),
        count("failure"),
        count("error"),
        count("skipped"),
        timestamp(&n.started),
        escape(&hostname())
    );
    xml.push_str("    <properties>\n");
    for (k, v) in props {
        let _ = writeln!(
            xml,
            "      <property name=\"{}\" value=\"{}\"/>",
            escape(k),
            escape(v)
        );
    }
    xml.push_str("    </properties>\n");
    for c in cases {
        let _ = write!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            escape(&c.classname),
            escape(&c.name),
            c.time
        );
        if let Some((el, ty, msg, body)) = &c.outcome {
            let _ = write!(
                xml,
                "\n      <{el} type=\"{}\" message=\"{}\">{}</{el}>",
                escape(ty),
                escape(msg),
                escape(body)
            );
        }
        if !c.out.is_empty() {
            let _ = write!(xml, "\n      <system-out>{}</system-out>", escape(&c.out));
        }
        xml.push_str("\n    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n");
}

/// The JUnit document of a night.
pub fn render(n: &Night) -> String {
    let mut props = vec![("night".to_string(), n.id.clone())];
    if let Some(k) = &n.kernel {
        props.push(("kernel".into(), k.release.clone()));
        props.push(("kernel.origin".into(), k.origin.clone()));
        if let Some(h) = &k.config_hash {
            props.push(("kernel.config".into(), h.clone()));
        }
        if let Some(b) = &k.bugzoo {
            props.push(("bugzoo".into(), b.clone()));
        }
    }
    let regression: Vec<Case> = n
        .regression
        .iter()
        .map(|e| {
            let outcome = match e.verdict {
                Verdict::Passed => None,
                Verdict::Failed => Some((
                    "failure",
                    if e.crashes > 0 { "regression" } else { "stopped-reproducing" }.to_string(),
                    e.message.clone(),
                    e.report.clone().unwrap_or_else(|| e.message.clone()),
                )),
                Verdict::Skipped => Some(("skipped", "skipped".into(), e.message.clone(), String::new())),
                Verdict::Error => Some((
                    "error",
                    "infrastructure".into(),
                    e.message.clone(),
                    e.message.clone(),
                )),
            };
            Case {
                classname: "hotfuzz.regression".into(),
                name: e.name.clone(),
                time: e.seconds,
                outcome,
                out: format!(
                    "{}\ntitle: {}\nexpected: {} ({})\nruns: {} counted, {} crashed, {} lost to infrastructure\n",
                    e.message,
                    e.title,
                    e.expected.map(|x| format!("{x:?}").to_lowercase()).unwrap_or_else(|| "-".into()),
                    e.why,
                    e.runs,
                    e.crashes,
                    e.infra
                ),
            }
        })
        .collect();
    let mut fuzzing = Vec::new();
    if let Some(st) = n.stage(super::summary::Stage::Fuzz) {
        let f = n.fuzz.clone().unwrap_or_default();
        let outcome = match st.state {
            StageState::Failed | StageState::Interrupted => Some((
                "error",
                "infrastructure".to_string(),
                st.note.clone(),
                st.note.clone(),
            )),
            StageState::Skipped | StageState::Pending => Some((
                "skipped",
                "skipped".to_string(),
                st.note.clone(),
                String::new(),
            )),
            _ => None,
        };
        fuzzing.push(Case {
            classname: "hotfuzz.fuzzing".into(),
            name: "campaign".into(),
            time: st.seconds,
            outcome,
            out: format!(
                "{} executions ({:.2}/s), corpus {}, {} state features, {} PCs; {}\n",
                f.execs, f.execs_per_sec, f.corpus, f.states, f.coverage, f.stopped
            ),
        });
    }
    for b in n.bugs.iter().filter(|b| b.class.is_news()) {
        let what = if b.class == Class::Regressed {
            format!(
                "regression: {} (fixed by {} before)",
                b.title,
                b.fix.as_deref().unwrap_or("?")
            )
        } else {
            format!("new bug: {}", b.title)
        };
        fuzzing.push(Case {
            classname: format!("hotfuzz.bugs.{}", b.class.name()),
            name: b.title.clone(),
            time: 0.0,
            outcome: Some((
                "failure",
                b.class.name().to_string(),
                what,
                b.report.clone(),
            )),
            out: format!(
                "seen {} times tonight, {} in all; first seen {}; reproducibility {}; files {}\n",
                b.tonight,
                b.count,
                b.first_seen,
                b.reproducibility.as_deref().unwrap_or("not measured"),
                b.files
            ),
        });
    }
    let all = regression.len() + fuzzing.len();
    let failures = regression
        .iter()
        .chain(&fuzzing)
        .filter(|c| c.outcome.as_ref().is_some_and(|o| o.0 == "failure"))
        .count();
    let errors = regression
        .iter()
        .chain(&fuzzing)
        .filter(|c| c.outcome.as_ref().is_some_and(|o| o.0 == "error"))
        .count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{all}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\">",
        escape(&format!("{} {}", n.name, n.id)),
        n.spent_s
    );
    suite(&mut xml, "hotfuzz.regression", n, &regression, &props);
    suite(&mut xml, "hotfuzz.fuzzing", n, &fuzzing, &props);
    xml.push_str("</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_xml_cannot_carry_is_replaced() {
        assert_eq!(
            escape("a<b & \"c\"\u{1b}[0m\0"),
            "a&lt;b &amp; &quot;c&quot;\u{fffd}[0m\u{fffd}"
        );
        assert_eq!(timestamp("2026-12-02T18:40:00Z"), "2026-12-02T18:40:00");
        assert_eq!(
            timestamp("2026-12-02T18:40:00.123456Z"),
            "2026-12-02T18:40:00"
        );
    }
}
