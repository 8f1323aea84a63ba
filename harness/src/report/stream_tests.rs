//! Tests of the streaming parser: report boundaries, caller contexts, WARNING forms, mail.

use super::*;

fn titles(log: &str) -> Vec<(String, Option<String>)> {
    parse(log)
        .into_iter()
        .map(|r| (r.title, r.corrupted))
        .collect()
}

#[test]
fn warning_forms_from_5_10_to_7_x() {
    // 5.10 to 6.18: `WARNING: CPU: N PID: M at file:line func+off/size [module]`.
    let old = "[  12.1] ------------[ cut here ]------------\n\
        [  12.2] WARNING: CPU: 1 PID: 5 at drivers/virtio/virtio_mem.c:1023 virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem]\n\
        [  12.3] Modules linked in: virtio_mem\n\
        [  12.4] CPU: 1 PID: 5 Comm: kworker/1:0 Not tainted 6.12.1 #1\n\
        [  12.5] RIP: 0010:virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem]\n\
        [  12.6] Call Trace:\n\
        [  12.7]  <TASK>\n\
        [  12.8]  virtio_mem_memory_notifier_cb+0x1a0/0x300 [virtio_mem]\n\
        [  12.9]  notifier_call_chain+0x5a/0xd0\n\
        [  13.0]  </TASK>\n\
        [  13.1] ---[ end trace 0000000000000000 ]---\n";
    assert_eq!(
        titles(old),
        [(
            "WARNING in virtio_mem_fake_offline_going_offline".into(),
            None
        )]
    );
    // 6.19+ and Debian sid's 7.x: `WARNING: file:line at func+off/size, CPU#N: comm/pid`.
    let new = old.replace(
        "WARNING: CPU: 1 PID: 5 at drivers/virtio/virtio_mem.c:1023 virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem]",
        "WARNING: drivers/virtio/virtio_mem.c:1023 at virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem], CPU#1: kworker/1:0/5",
    );
    assert_eq!(titles(&new), titles(old));
    // Without symbols the new header says `at 0x0`: the RIP line still names the function.
    let bare = old.replace(
        "WARNING: CPU: 1 PID: 5 at drivers/virtio/virtio_mem.c:1023 virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem]",
        "WARNING: drivers/virtio/virtio_mem.c:1023 at 0x0, CPU#1: kworker/1:0/5",
    );
    assert_eq!(titles(&bare), titles(old));
    // A refcount warning in the new form is a refcount bug, named after the caller.
    let refcount = "[  99.0] refcount_t: underflow; use-after-free.\n\
        [  99.1] WARNING: lib/refcount.c:28 at refcount_warn_saturate+0x13d/0x1a0, CPU#0: sh/1\n\
        [  99.2] RIP: 0010:refcount_warn_saturate+0x13d/0x1a0\n\
        [  99.3] Call Trace:\n\
        [  99.4]  <TASK>\n\
        [  99.5]  offline_pages+0x70/0x90\n\
        [  99.6]  </TASK>\n";
    assert_eq!(
        titles(refcount),
        [("WARNING: refcount bug in offline_pages".into(), None)]
    );
}

#[test]
fn a_page_dump_after_its_warning_is_the_warnings() {
    let log = "[  7.0] WARNING: CPU: 0 PID: 9 at drivers/virtio/virtio_mem.c:1023 virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem]\n\
        [  7.1] RIP: 0010:virtio_mem_fake_offline_going_offline+0x55/0x60 [virtio_mem]\n\
        [  7.2] Call Trace:\n\
        [  7.3]  <TASK>\n\
        [  7.4]  memory_notify+0x1a/0x30\n\
        [  7.5]  </TASK>\n\
        [  7.6] ---[ end trace 0000000000000000 ]---\n\
        [  7.7] page: refcount:1 mapcount:0 mapping:0000000000000000 index:0x0 pfn:0x140000\n\
        [  7.8] flags: 0x17ffffc0000000(node=0|zone=2)\n\
        [  7.9] page dumped because: fake-offline page referenced\n\
        [  8.0] virtio_mem virtio1: plugged size: 0x8000000\n";
    let got = parse(log);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].title,
        "WARNING in virtio_mem_fake_offline_going_offline"
    );
    assert_eq!(got[0].page_dump_reasons, ["fake-offline page referenced"]);
}

#[test]
fn caller_tags_keep_interleaved_reports_apart() {
    let log = "[  1.0][ T10] WARNING: CPU: 0 PID: 10 at mm/a.c:1 alpha+0x1/0x2\n\
        [  1.0][ T20] WARNING: CPU: 1 PID: 20 at mm/b.c:1 beta+0x1/0x2\n\
        [  1.1][ T20] RIP: 0010:beta+0x1/0x2\n\
        [  1.1][ T10] RIP: 0010:alpha+0x1/0x2\n\
        [  1.2][ T10] Call Trace:\n\
        [  1.2][ T20] Call Trace:\n\
        [  1.3][ T20]  beta_caller+0x1/0x2\n\
        [  1.3][ T10]  alpha_caller+0x1/0x2\n";
    let got = parse(log);
    let t: Vec<&str> = got.iter().map(|r| r.title.as_str()).collect();
    assert_eq!(t, ["WARNING in alpha", "WARNING in beta"]);
    assert!(got.iter().all(|r| !r.interleaved && r.corrupted.is_none()));
}

#[test]
fn the_hung_task_detector_lists_tasks_one_after_the_other() {
    let one = |task: &str, lock: &str| {
        format!(
            "[  9.0] INFO: task {task}:1 blocked for more than 143 seconds.\n\
             [  9.1] Call Trace:\n\
             [  9.2]  [<ffffffff81000000>] schedule+0x1/0x2\n\
             [  9.3]  [<ffffffff81000000>] mutex_lock_nested+0x1/0x2\n\
             [  9.4]  [<ffffffff81000000>] {lock}+0x1/0x2\n"
        )
    };
    let log = one("a", "offline_pages") + &one("b", "online_pages");
    let tagged: String = log
        .lines()
        .map(|l| format!("{}\n", l.replacen("] ", "][ T5] ", 1)))
        .collect();
    for log in [log, tagged] {
        let got = parse(&log);
        let t: Vec<&str> = got.iter().map(|r| r.title.as_str()).collect();
        assert_eq!(
            t,
            [
                "INFO: task hung in offline_pages",
                "INFO: task hung in online_pages"
            ],
            "{log}"
        );
        assert!(got.iter().all(|r| r.corrupted.is_none() && !r.interleaved));
    }
}

#[test]
fn lines_without_a_kernel_timestamp_are_not_the_kernels() {
    // syz-executor's output between a report's lines is not part of it.
    let log = "[  5.0] BUG: KASAN: use-after-free in foo+0x1/0x2\n\
        [  5.1] Read of size 8 at addr ffff888000000000 by task sh/1\n\
        [  5.2] Call Trace:\n\
        executing program 3:\n\
        [  5.3]  dump_stack+0x1/0x2\n\
        [  5.4]  kasan_report+0x1/0x2\n\
        r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file0\\x00', 0x0, 0x0)\n\
        [  5.5]  foo+0x1/0x2\n\
        [  5.6]  bar+0x1/0x2\n";
    let r = parse(log).remove(0);
    assert_eq!(r.title, "KASAN: use-after-free Read in foo");
    assert_eq!(r.alt_titles, ["bad-access in foo"]);
    assert!(!r.text.contains("executing program"), "{}", r.text);
}

#[test]
fn a_long_quoted_mail_is_unquoted_to_its_end() {
    let mut mail: String = (0..400)
        .map(|i| format!("> [  {i}.0] noise {i}\n"))
        .collect();
    mail.push_str("> [  500.0] BUG: KASAN: use-after-free in foo+0x1/0x2\n");
    mail.push_str("> [  500.1] Read of size 8 at addr ffff888000000000 by task sh/1\n");
    mail.push_str("> [  500.2] Call Trace:\n> [  500.3]  foo+0x1/0x2\n");
    let streamed = parse_reader(std::io::Cursor::new(mail.as_bytes())).unwrap();
    let whole = parse(&mail);
    assert_eq!(streamed.len(), 1);
    assert_eq!(streamed[0].title, "KASAN: use-after-free Read in foo");
    assert_eq!(streamed[0].title, whole[0].title);
}

#[test]
fn long_lines_are_cut() {
    let mut p = Parser::new(false);
    let long = format!("[  1.0] BUG: KASAN: {}", "x".repeat(10 * MAX_LINE));
    p.push(&long);
    let r = p.finish();
    assert!(
        r.iter().all(|r| r.text.len() <= MAX_LINE),
        "{}",
        r[0].text.len()
    );
}
