//! The pages people read: one self-contained HTML page per night (inline CSS and SVG, no
//! scripts, nothing fetched) and an index of every night with trend plots. The night's page
//! shows the verdict, the kernel and set-up, the stages and their time, plots of the campaign
//! over the night from `stats.jsonl`, the regression suite, and the bug table with links to
//! the files copied into the night's directory.

use super::summary::{Class, Night, StageState, Verdict};
use super::svg::{self, Series, COLORS};
use std::fmt::Write as _;
use std::path::Path;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1120px}\
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}\
table{border-collapse:collapse;font-size:13px;width:100%}th,td{border:1px solid #ddd;padding:4px 7px;text-align:left;vertical-align:top}\
th{background:#eef1f5}table.kv th{width:150px}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.verdict{font-size:15px;padding:8px 12px;border-radius:4px;margin:8px 0}.exit0{background:#e3f4e3}.exit1{background:#fde2e2}.exit2{background:#fff1cc}\
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;color:#fff}\
.new,.regressed,.failed,.error{background:#b3261e}.known,.skipped,.pending{background:#6b7280}.fixed,.passed,.done{background:#1e7b34}.invalid,.interrupted,.running{background:#a16207}\
.plots{display:grid;grid-template-columns:repeat(2,auto);gap:12px;justify-content:start}code,pre{font-size:12px}\
pre{background:#f7f7f7;padding:6px;overflow-x:auto;max-height:260px}footer{margin-top:28px;font-size:12px;color:#666}";

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    )
}

fn badge(class: &str) -> String {
    format!("<span class=\"badge {}\">{}</span>", esc(class), esc(class))
}

fn stage_state(s: StageState) -> &'static str {
    match s {
        StageState::Pending => "pending",
        StageState::Running => "running",
        StageState::Done => "done",
        StageState::Skipped => "skipped",
        StageState::Failed => "failed",
        StageState::Interrupted => "interrupted",
    }
}

/// One line of `stats.jsonl` reduced to what the plots show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatPoint {
    /// Minutes since the first line.
    pub minute: f64,
    /// Executions per second.
    pub execs_per_sec: f64,
    /// Corpus size.
    pub corpus: f64,
    /// State features.
    pub states: f64,
    /// KCOV PCs.
    pub coverage: f64,
    /// Unique titles.
    pub unique_reports: f64,
    /// Reports, repeats included.
    pub reports: f64,
}

/// Reads a campaign's stats lines (unreadable lines are skipped: the campaign may have been
/// killed mid-line).
pub fn read_stats(path: &Path) -> Vec<StatPoint> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut t0 = None;
    let mut out = Vec::new();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let t = v["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        let secs = match (t, t0) {
            (Some(t), None) => {
                t0 = Some(t);
                0.0
            }
            (Some(t), Some(z)) => t.duration_since(z).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            (None, _) => v["elapsed_s"].as_f64().unwrap_or(0.0),
        };
        let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
        out.push(StatPoint {
            minute: secs / 60.0,
            execs_per_sec: n("execs_per_sec"),
            corpus: n("corpus"),
            states: n("states"),
            coverage: n("coverage"),
            unique_reports: n("unique_reports"),
            reports: n("reports"),
        });
    }
    out
}

fn series(
    name: &str,
    color: &'static str,
    pts: &[StatPoint],
    f: impl Fn(&StatPoint) -> f64,
) -> Series {
    Series {
        name: name.into(),
        color,
        points: pts.iter().map(|p| (p.minute, f(p))).collect(),
    }
}

/// The four campaign plots.
pub fn plots(stats: &[StatPoint]) -> String {
    let m = "minutes into the campaign";
    let mut out = String::from("<div class=\"plots\">");
    out.push_str(&svg::line_chart(
        "plot-execs",
        "executions per second",
        m,
        &[series("execs/s", COLORS[0], stats, |p| p.execs_per_sec)],
    ));
    out.push_str(&svg::line_chart(
        "plot-corpus",
        "corpus size",
        m,
        &[series("programs", COLORS[2], stats, |p| p.corpus)],
    ));
    let cov = stats.iter().any(|p| p.coverage > 0.0);
    let mut feats = vec![series("state features", COLORS[3], stats, |p| p.states)];
    if cov {
        feats.push(series("KCOV PCs", COLORS[4], stats, |p| p.coverage));
    }
    out.push_str(&svg::line_chart(
        "plot-states",
        "state features and coverage",
        m,
        &feats,
    ));
    out.push_str(&svg::line_chart(
        "plot-reports",
        "reports",
        m,
        &[
            series("unique titles", COLORS[1], stats, |p| p.unique_reports),
            series("all reports", COLORS[4], stats, |p| p.reports),
        ],
    ));
    out.push_str("</div>");
    out
}

/// The night's page. `stats` are the campaign's lines of this night.
pub fn night_page(n: &Night, stats: &[StatPoint]) -> String {
    let mut h = head(&format!("{} — night {}", n.name, n.id));
    let _ = writeln!(
        h,
        "<header><h1>{} — night {}</h1>",
        esc(&n.name),
        esc(&n.id)
    );
    let code = n.exit_code.unwrap_or_else(|| n.decide_exit());
    let meaning = match code {
        0 => "nothing new",
        1 => "a person has to look",
        _ => "the night could not run everything it was asked to",
    };
    let state = if n.complete() {
        ""
    } else {
        " (not finished: results of the stages that finished)"
    };
    let _ = writeln!(
        h,
        "<p class=\"verdict exit{code}\" id=\"verdict\"><b>exit {code}</b>: {meaning} — {}{state}</p>",
        esc(&n.verdict_line())
    );
    let _ = writeln!(
        h,
        "<p>started {} · {} of a {} budget · <a href=\"../../index.html\">all nights</a></p></header>",
        esc(&n.started),
        duration(n.spent_s),
        duration(n.budget_s)
    );
    for p in &n.problems {
        let _ = writeln!(h, "<p class=\"verdict exit2\">{}</p>", esc(p));
    }
    // Kernel and set-up.
    h.push_str("<h2 id=\"kernel\">Kernel and set-up</h2><table class=\"kv\">");
    let mut kv = |k: &str, v: &str| {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    };
    match &n.kernel {
        Some(k) => {
            kv("release", &k.release);
            kv("origin", &k.origin);
            if let Some(b) = &k.banner {
                kv("banner", b);
            }
            kv(
                "commit",
                k.commit
                    .as_deref()
                    .unwrap_or("none (a package or a given image)"),
            );
            kv(
                "config",
                &k.config_hash
                    .as_deref()
                    .map(|c| format!("blake3 {c}"))
                    .unwrap_or_else(|| "unknown".into()),
            );
            if let Some(f) = &k.config_file {
                kv("config file", f);
            }
            kv("architecture", &k.arch);
            kv("bug zoo", k.bugzoo.as_deref().unwrap_or("not loaded"));
        }
        None => kv("kernel", "not prepared"),
    }
    kv(
        "configuration",
        n.config.file.as_deref().unwrap_or("(defaults)"),
    );
    h.push_str("</table>");
    let _ = write!(
        h,
        "<details><summary>effective configuration</summary><pre>{}</pre></details>",
        esc(&n.config.yaml)
    );
    // Stages.
    h.push_str("<h2 id=\"stages\">Stages</h2>");
    let colors = ["#4b5563", "#0f766e", "#1d4ed8", "#7c3aed", "#9a3412"];
    let bars: Vec<(String, f64, &str)> = n
        .stages
        .iter()
        .map(|s| {
            (
                s.stage.name().to_string(),
                s.seconds,
                colors[s.stage as usize % colors.len()],
            )
        })
        .collect();
    h.push_str(&svg::timeline("plot-stages", n.budget_s, &bars));
    h.push_str("<table id=\"stages-table\"><tr><th>stage</th><th>state</th><th>time</th><th>given</th><th>note</th></tr>");
    for s in &n.stages {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            s.stage.name(),
            badge(stage_state(s.state)),
            duration(s.seconds),
            s.budget_s.map(duration).unwrap_or_default(),
            esc(&s.note)
        );
    }
    h.push_str("</table>");
    // Fuzzing.
    h.push_str("<h2 id=\"fuzzing\">Fuzzing</h2>");
    if let Some(f) = &n.fuzz {
        let _ = write!(
            h,
            "<p>{} executions in {} ({:.2}/s), corpus {}, {} state features, {} PCs; {} boots ({} failed), {} runs lost to infrastructure, {} out of memory, {} slow but not hung, {} suppressed. {}</p>{}",
            f.execs,
            duration(f.seconds),
            f.execs_per_sec,
            f.corpus,
            f.states,
            f.coverage,
            f.boots,
            f.boot_failures,
            f.infra_errors,
            f.oom,
            f.slow,
            f.suppressed,
            esc(&f.stopped),
            if f.time.is_empty() {
                String::new()
            } else {
                format!("<p>Guest time: {}</p>", esc(&f.time))
            }
        );
    } else {
        h.push_str("<p>The campaign did not run.</p>");
    }
    h.push_str(&plots(stats));
    // Regression suite.
    h.push_str("<h2 id=\"regression\">Regression suite</h2>");
    if n.regression.is_empty() {
        h.push_str("<p>No regression entries ran.</p>");
    } else {
        h.push_str("<table id=\"suite-table\"><tr><th>entry</th><th>result</th><th>title</th><th>expected</th><th>runs</th><th>time</th><th>message</th></tr>");
        for e in &n.regression {
            let v = match e.verdict {
                Verdict::Passed => "passed",
                Verdict::Failed => "failed",
                Verdict::Skipped => "skipped",
                Verdict::Error => "error",
            };
            let expected = e
                .expected
                .map(|x| format!("{x:?}").to_lowercase())
                .unwrap_or_else(|| "-".into());
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} <small>({})</small></td><td class=\"num\">{}/{}{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&e.name),
                badge(v),
                esc(&e.title),
                esc(&expected),
                esc(&e.why),
                e.crashes,
                e.runs,
                if e.infra > 0 { format!(" (+{} infra)", e.infra) } else { String::new() },
                duration(e.seconds),
                esc(&e.message)
            );
        }
        h.push_str("</table>");
    }
    // Bugs.
    h.push_str("<h2 id=\"bugs\">Bugs</h2>");
    if n.bugs.is_empty() {
        h.push_str("<p>No bugs seen tonight.</p>");
    } else {
        h.push_str("<table id=\"bugs-table\"><tr><th>class</th><th>title</th><th>first seen</th><th>tonight</th><th>all</th><th>reproducibility</th><th>files</th></tr>");
        for b in &n.bugs {
            let mut links = Vec::new();
            for (f, label) in [
                ("report.txt", "report"),
                ("excerpt.log", "console"),
                ("repro.prog", "repro.prog"),
                ("repro.sh", "repro.sh"),
                ("email.txt", "mail"),
            ] {
                if b.have.iter().any(|h| h == f) {
                    links.push(format!("<a href=\"{}/{f}\">{label}</a>", esc(&b.files)));
                }
            }
            let mut title = esc(&b.title);
            if b.only_injected {
                title.push_str(" <small>(only with fault injection)</small>");
            }
            if b.class == Class::Regressed {
                if let Some(f) = &b.fix {
                    title.push_str(&format!(" <small>(was fixed by {})</small>", esc(f)));
                }
            }
            let _ = write!(
                h,
                "<tr class=\"bug bug-{}\"><td>{}</td><td>{title}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                b.class.name(),
                badge(b.class.name()),
                esc(&b.first_seen),
                b.tonight,
                b.count,
                esc(b.reproducibility.as_deref().unwrap_or("-")),
                links.join(" · ")
            );
        }
        h.push_str("</table>");
    }
    for r in &n.repro {
        let _ = write!(
            h,
            "<p><small>repro of {}: {}, {} → {} ops, {} guest runs, {}{}</small></p>",
            esc(&r.title),
            if r.reproduced {
                format!("reproduced {}", esc(&r.reliability))
            } else {
                "not reproduced".into()
            },
            r.ops.0,
            r.ops.1,
            r.runs,
            duration(r.seconds),
            r.note
                .as_deref()
                .map(|x| format!("; {}", esc(x)))
                .unwrap_or_default()
        );
    }
    h.push_str("<footer>Machine-readable: <a href=\"summary.json\">summary.json</a> · <a href=\"junit.xml\">junit.xml</a> · <a href=\"stats.jsonl\">stats.jsonl</a></footer>\n</body></html>\n");
    h
}

/// The index of nights (newest first) with trend plots.
pub fn index_page(name: &str, nights: &[Night]) -> String {
    let mut h = head(&format!("{name} — nights"));
    let _ = writeln!(h, "<h1>{} — nights</h1>", esc(name));
    let chron: Vec<&Night> = nights.iter().rev().collect();
    let labels: Vec<String> = chron.iter().map(|n| n.id.clone()).collect();
    let layer =
        |f: &dyn Fn(&Night) -> usize| chron.iter().map(|n| f(n) as f64).collect::<Vec<f64>>();
    h.push_str("<div class=\"plots\">");
    h.push_str(&svg::stacked_bars(
        "trend-bugs",
        "bugs per night",
        &labels,
        &[
            ("new", COLORS[1], layer(&|n| n.counts.new)),
            ("regressed", COLORS[4], layer(&|n| n.counts.regressed)),
            ("known", COLORS[0], layer(&|n| n.counts.known)),
        ],
    ));
    let pts = |f: &dyn Fn(&Night) -> Option<f64>| -> Vec<(f64, f64)> {
        chron
            .iter()
            .enumerate()
            .filter_map(|(i, n)| f(n).map(|v| (i as f64 + 1.0, v)))
            .collect()
    };
    h.push_str(&svg::line_chart(
        "trend-fuzz",
        "campaign per night",
        "night",
        &[
            Series {
                name: "execs/s".into(),
                color: COLORS[0],
                points: pts(&|n| n.fuzz.as_ref().map(|f| f.execs_per_sec)),
            },
            Series {
                name: "suite failures".into(),
                color: COLORS[1],
                points: pts(&|n| Some(n.counts.suite_failed as f64)),
            },
        ],
    ));
    h.push_str("</div>");
    h.push_str("<table id=\"nights-table\"><tr><th>night</th><th>exit</th><th>kernel</th><th>new</th><th>regressed</th><th>known</th><th>suite</th><th>executions</th><th>time</th><th>verdict</th></tr>");
    for n in nights {
        let code = n
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let c = &n.counts;
        let _ = write!(
            h,
            "<tr><td><a href=\"nights/{id}/index.html\">{id}</a></td><td class=\"num\">{code}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}{}</td></tr>",
            esc(n.kernel.as_ref().map(|k| k.release.as_str()).unwrap_or("-")),
            c.new,
            c.regressed,
            c.known,
            c.suite_passed,
            c.suite_passed + c.suite_failed + c.suite_errors,
            n.fuzz.as_ref().map(|f| f.execs).unwrap_or(0),
            duration(n.spent_s),
            esc(&n.verdict_line()),
            if n.complete() { "" } else { " (not finished)" },
            id = esc(&n.id),
        );
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_become_minutes_and_bad_lines_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("stats.jsonl");
        std::fs::write(
            &p,
            "{\"time\":\"2026-12-02T18:00:00Z\",\"execs_per_sec\":0.5,\"corpus\":3}\n{\"time\":\"2026-12-02T18:01:30Z\",\"execs_per_sec\":0.7,\"corpus\":5}\n{\"time\":\"2026-12",
        )
        .unwrap();
        let s = read_stats(&p);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].minute, 1.5);
        assert_eq!(s[1].corpus, 5.0);
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(65.0), "1m05s");
        assert_eq!(esc("<a href='x'>"), "&lt;a href=&#39;x&#39;&gt;");
    }
}
