//! Prints the reports of console logs (a development aid; `hotfuzz report parse` is the tool).
//! `--symbolize MODULE.ko` adds file:line to that module's frames; `--header` prints the
//! reports as a golden-test header (harness/testdata/report/README.md) to review and keep.
fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut sym = None;
    if args.first().map(String::as_str) == Some("--header") {
        for f in &args[1..] {
            let text = std::fs::read_to_string(f).unwrap();
            let reports = hotfuzz::report::parse(&text);
            if reports.is_empty() {
                println!("REPORTS: 0");
            }
            for r in reports {
                println!("TITLE: {}", r.title);
                for a in &r.alt_titles {
                    println!("ALT: {a}");
                }
                let kind = serde_json::to_value(r.kind).unwrap();
                println!("TYPE: {}", kind.as_str().unwrap());
                if let Some(f) = &r.frame {
                    println!("FRAME: {f}");
                }
                println!(
                    "CORRUPTED: {}",
                    if r.corrupted.is_some() { "Y" } else { "N" }
                );
                println!("INTERLEAVED: {}", if r.interleaved { "Y" } else { "N" });
            }
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--symbolize") {
        let ko = std::path::PathBuf::from(&args[1]);
        args.drain(..2);
        let k = hotfuzz_vm::Kernel::resolve(
            &hotfuzz_vm::KernelSource::DebianDefault,
            hotfuzz_vm::Arch::X86_64,
        )
        .unwrap();
        sym = Some(hotfuzz::judge::symbolize::Symbolizer::new(&k, &[ko]));
    }
    for f in args {
        let text = std::fs::read_to_string(&f).unwrap();
        let reports = hotfuzz::report::parse(&text);
        println!("== {f}: {} reports", reports.len());
        for r in reports {
            println!("  TITLE: {}\n    type {:?} frame {:?} corrupted {:?} interleaved {} panicked {} lines {}-{} alt {:?} dumps {:?}", r.title, r.kind, r.frame, r.corrupted, r.interleaved, r.panicked, r.start_line, r.end_line, r.alt_titles, r.page_dump_reasons);
            if let Some(s) = &sym {
                println!("{}", s.symbolize(&r.text));
            }
        }
    }
}
