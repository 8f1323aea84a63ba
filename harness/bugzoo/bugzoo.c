// SPDX-License-Identifier: GPL-2.0
/*
 * hotfuzz bug zoo: real kernel bugs planted behind module parameters, for testing hotfuzz's
 * fuzzer, report parser and reproducer minimizer end to end.
 *
 * A memory notifier records, per memory block, the hotplug events it sees (going online,
 * online, going offline, offline, cancelled online/offline). Each planted bug fires only
 * after a specific sequence of events on ONE block, so finding it takes the right program,
 * not luck. Arm bugs with the `bugs` parameter (comma separated, at load or later through
 * /sys/module/bugzoo/parameters/bugs):
 *
 *   warn_reonline      WARN when a block comes online for the third time, i.e. after
 *                      online -> offline -> online -> offline -> online. Trigger: plug, then
 *                      offline/online the same block twice.
 *                      Title: "WARNING in bugzoo_warn_reonline".
 *   bug_double_cancel  BUG when offlining a block is cancelled twice in a row (two offline
 *                      attempts that fail after MEM_GOING_OFFLINE, e.g. while a page of the
 *                      block is pinned, or with the notifier injector failing it).
 *                      Title: "kernel BUG in bugzoo_bug_double_cancel".
 *   badpage_offline    Frees a page with a non-zero mapcount ("Bad page state") when a block
 *                      goes offline after an earlier offline attempt on it was cancelled.
 *                      Title: "BUG: Bad page state in bugzoo_bad_page".
 *   stuck_offline      Blocks offlining uninterruptibly (stuck_secs, default 300) when a block
 *                      goes offline for the third time: offline -> online -> offline ->
 *                      online -> offline. The offline does not return; the hung task
 *                      detector reports it. (Offlining from a kernel zone would be a nicer
 *                      trigger, but kernel allocations land in a freshly onlined ZONE_NORMAL
 *                      block at once and make its offlining fail before any notifier runs.)
 *                      Title: "INFO: task hung in bugzoo_stuck_offline".
 *   race_walker        A race: WARN when a block starts going offline while a /proc/kpageflags
 *                      read (a PFN walker) is in progress, for the third time since the module
 *                      loaded. Each MEM_GOING_OFFLINE opens a 1 ms window; a read that starts
 *                      inside it counts too. One offline next to one read rarely overlaps:
 *                      finding it takes offlines repeated while kpageflags is read in a loop
 *                      on another thread, which is the shape of the real races between PFN
 *                      walkers and offlining (virtio-mem's fake-offline pages).
 *                      Title: "WARNING in bugzoo_race_walker".
 *
 * The `trigger` parameter fires a bug at once (for collecting console logs): warn, warn_msg,
 * bug, null, gpf, pagefault, badpage, softlockup, hung, list, refcount, atomic_sleep, panic,
 * warn_all (WARN on every CPU at the same time), null_all, kfence (needs
 * kfence.sample_interval).
 */

#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/kprobes.h>
#include <linux/kfence.h>
#include <linux/list.h>
#include <linux/memory.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/refcount.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/string.h>

static char bugs[128];
module_param_string(bugs, bugs, sizeof(bugs), 0644);
MODULE_PARM_DESC(bugs, "armed bugs: warn_reonline,bug_double_cancel,badpage_offline,stuck_offline,race_walker");

static unsigned int stuck_secs = 300;
module_param(stuck_secs, uint, 0644);
MODULE_PARM_DESC(stuck_secs, "how long stuck_offline blocks");

enum ev {
	BZ_EV_NONE,
	BZ_EV_GOING_ONLINE,
	BZ_EV_ONLINE,
	BZ_EV_GOING_OFFLINE,
	BZ_EV_OFFLINE,
	BZ_EV_CANCEL_ONLINE,
	BZ_EV_CANCEL_OFFLINE,
};

#define HIST 16
#define SLOTS 128

struct block_hist {
	unsigned long start_pfn;
	bool used;
	unsigned int n;		/* events recorded, the last HIST kept */
	unsigned char ev[HIST];
};

static struct block_hist hist[SLOTS];
static DEFINE_MUTEX(hist_lock);

/*
 * Every planted function ends by bumping this counter, so the compiler cannot turn its last
 * call into a tail call that would hide the function from stack traces.
 */
static unsigned long bugzoo_fired;
#define KEEP_FRAME() WRITE_ONCE(bugzoo_fired, bugzoo_fired + 1)

static bool armed(const char *name)
{
	size_t len = strlen(name);
	const char *p = bugs;

	while ((p = strstr(p, name))) {
		bool start = p == bugs || p[-1] == ',';
		bool end = p[len] == '\0' || p[len] == ',' || p[len] == '\n';

		if (start && end)
			return true;
		p += len;
	}
	return false;
}

static struct block_hist *lookup(unsigned long pfn)
{
	struct block_hist *free = NULL;
	int i;

	for (i = 0; i < SLOTS; i++) {
		if (hist[i].used && hist[i].start_pfn == pfn)
			return &hist[i];
		if (!hist[i].used && !free)
			free = &hist[i];
	}
	if (free) {
		free->used = true;
		free->start_pfn = pfn;
		free->n = 0;
	}
	return free;
}

/* The i-th most recent event (0 = the one just recorded). */
static enum ev recent(struct block_hist *h, unsigned int i)
{
	if (i >= h->n || i >= HIST)
		return BZ_EV_NONE;
	return h->ev[(h->n - 1 - i) % HIST];
}

static unsigned int count(struct block_hist *h, enum ev e)
{
	unsigned int i, c = 0;

	for (i = 0; i < h->n && i < HIST; i++)
		c += recent(h, i) == e;
	return c;
}

/* ---- planted bugs ------------------------------------------------------------------------ */

static noinline void bugzoo_warn_reonline(unsigned long pfn)
{
	WARN(1, "bugzoo: memory block at pfn %#lx came online a third time\n", pfn);
}

static noinline void bugzoo_bug_double_cancel(unsigned long pfn)
{
	pr_err("bugzoo: offlining of the block at pfn %#lx was cancelled twice in a row\n", pfn);
	BUG();
}

static noinline void bugzoo_bad_page(void)
{
	struct page *page = alloc_page(GFP_KERNEL);

	if (!page)
		return;
	/* A mapcount left behind, as a page type left in _mapcount would be. */
	atomic_set(&page->_mapcount, 0);
	__free_page(page);
	KEEP_FRAME();
}

static noinline void bugzoo_stuck_offline(unsigned long pfn)
{
	pr_info("bugzoo: blocking the offlining of pfn %#lx for %u s\n", pfn, stuck_secs);
	ssleep(stuck_secs);
	KEEP_FRAME();
}

/* race_walker: /proc/kpageflags reads in progress, whether a block is going offline now, and
 * how often the two met. */
static atomic_t walkers_in = ATOMIC_INIT(0);
static atomic_t going_offline_now = ATOMIC_INIT(0);
static atomic_t overlaps = ATOMIC_INIT(0);
static bool walker_probe_on;

static noinline void bugzoo_race_walker(int n)
{
	WARN(1, "bugzoo: a block went offline during a kpageflags read (%d times)\n", n);
}

static void race_met(void)
{
	int n = atomic_inc_return(&overlaps);

	if (n == 3)
		bugzoo_race_walker(n);
}

static int walker_enter(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	atomic_inc(&walkers_in);
	if (armed("race_walker") && atomic_read(&going_offline_now))
		race_met();
	return 0;
}

static int walker_leave(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	atomic_dec(&walkers_in);
	return 0;
}

static struct kretprobe walker_probe = {
	.kp.symbol_name = "kpageflags_read",
	.entry_handler = walker_enter,
	.handler = walker_leave,
	.maxactive = 16,
};

/* The most recent event before the i-th one that is not a "going" event. */
static enum ev settled_before(struct block_hist *h, unsigned int i)
{
	for (i++; i < h->n && i < HIST; i++) {
		enum ev e = recent(h, i);

		if (e != BZ_EV_GOING_OFFLINE && e != BZ_EV_GOING_ONLINE)
			return e;
	}
	return BZ_EV_NONE;
}

static int bugzoo_memory_notify(struct notifier_block *nb, unsigned long action, void *arg)
{
	struct memory_notify *mn = arg;
	struct block_hist *h;
	enum ev e;

	switch (action) {
	case MEM_GOING_ONLINE:
		e = BZ_EV_GOING_ONLINE;
		break;
	case MEM_ONLINE:
		e = BZ_EV_ONLINE;
		break;
	case MEM_GOING_OFFLINE:
		e = BZ_EV_GOING_OFFLINE;
		break;
	case MEM_OFFLINE:
		e = BZ_EV_OFFLINE;
		break;
	case MEM_CANCEL_ONLINE:
		e = BZ_EV_CANCEL_ONLINE;
		break;
	case MEM_CANCEL_OFFLINE:
		e = BZ_EV_CANCEL_OFFLINE;
		break;
	default:
		return NOTIFY_OK;
	}

	if (e == BZ_EV_GOING_OFFLINE && armed("race_walker")) {
		atomic_set(&going_offline_now, 1);
		if (atomic_read(&walkers_in) > 0)
			race_met();
		mdelay(1);
		atomic_set(&going_offline_now, 0);
	}

	mutex_lock(&hist_lock);
	h = lookup(mn->start_pfn);
	if (!h) {
		mutex_unlock(&hist_lock);
		return NOTIFY_OK;
	}
	h->ev[h->n % HIST] = e;
	h->n++;

	if (e == BZ_EV_ONLINE && armed("warn_reonline") &&
	    count(h, BZ_EV_ONLINE) >= 3 && count(h, BZ_EV_OFFLINE) >= 2) {
		mutex_unlock(&hist_lock);
		bugzoo_warn_reonline(mn->start_pfn);
		return NOTIFY_OK;
	}
	/* ..., CANCEL_OFFLINE, [GOING_OFFLINE,] CANCEL_OFFLINE: nothing settled in between */
	if (e == BZ_EV_CANCEL_OFFLINE && armed("bug_double_cancel") &&
	    settled_before(h, 0) == BZ_EV_CANCEL_OFFLINE) {
		mutex_unlock(&hist_lock);
		bugzoo_bug_double_cancel(mn->start_pfn);
		return NOTIFY_OK;
	}
	if (e == BZ_EV_OFFLINE && armed("badpage_offline") && count(h, BZ_EV_CANCEL_OFFLINE) >= 1) {
		mutex_unlock(&hist_lock);
		bugzoo_bad_page();
		return NOTIFY_OK;
	}
	if (e == BZ_EV_GOING_OFFLINE && armed("stuck_offline") && count(h, BZ_EV_OFFLINE) >= 2) {
		mutex_unlock(&hist_lock);
		bugzoo_stuck_offline(mn->start_pfn);
		return NOTIFY_OK;
	}
	mutex_unlock(&hist_lock);
	return NOTIFY_OK;
}

static struct notifier_block bugzoo_nb = {
	.notifier_call = bugzoo_memory_notify,
};

/* ---- immediate triggers (console log collection) ------------------------------------------ */

static int *volatile bugzoo_null;
static DEFINE_SPINLOCK(bugzoo_lock);

static noinline void bugzoo_trigger_warn(void)
{
	WARN_ON(1);
}

static noinline void bugzoo_trigger_warn_msg(void)
{
	WARN(1, "bugzoo: a warning with a message\n");
}

static noinline void bugzoo_trigger_bug(void)
{
	BUG();
}

static noinline void bugzoo_trigger_null(void)
{
	*bugzoo_null = 1;
	KEEP_FRAME();
}

static noinline void bugzoo_trigger_gpf(void)
{
	*(volatile unsigned long *)(unsigned long)0xdead000000000100UL = 1;
	KEEP_FRAME();
}

static noinline void bugzoo_trigger_pagefault(void)
{
	/* Inside the kernel half, but nothing is mapped there. */
	*(volatile unsigned long *)(unsigned long)(-4096UL * 1024) = 1;
	KEEP_FRAME();
}

static noinline void bugzoo_trigger_softlockup(void)
{
	unsigned long end = jiffies + 30 * HZ;

	preempt_disable();
	while (time_before(jiffies, end))
		cpu_relax();
	preempt_enable();
}

static noinline void bugzoo_trigger_hung(void)
{
	ssleep(stuck_secs);
	KEEP_FRAME();
}

static noinline void bugzoo_trigger_list(void)
{
	static LIST_HEAD(head);
	static struct list_head a, b;

	INIT_LIST_HEAD(&head);
	list_add(&a, &head);
	a.prev = &b;		/* corrupt: head.next->prev no longer points at head */
	list_add(&b, &head);
}

static noinline void bugzoo_trigger_refcount(void)
{
	refcount_t r = REFCOUNT_INIT(1);

	refcount_dec(&r);	/* 1 -> 0 through dec: "decrement hit 0; leaking memory" */
	refcount_dec(&r);	/* and below zero: "underflow; use-after-free" */
	KEEP_FRAME();
}

static noinline void bugzoo_trigger_atomic_sleep(void)
{
	spin_lock(&bugzoo_lock);
	msleep(10);
	spin_unlock(&bugzoo_lock);
	KEEP_FRAME();
}

static noinline void bugzoo_trigger_kfence(void)
{
	int i;

	for (i = 0; i < 100000; i++) {
		char *p = kmalloc(32, GFP_KERNEL);

		if (!p)
			return;
		if (is_kfence_address(p)) {
			kfree(p);
			pr_info("bugzoo: reading freed KFENCE object: %d\n", READ_ONCE(p[0]));
			return;
		}
		kfree(p);
		if (i % 64 == 0)
			msleep(1);
	}
	pr_info("bugzoo: no KFENCE object in time (boot with kfence.sample_interval=1)\n");
}

static noinline void bugzoo_trigger_panic(void)
{
	panic("bugzoo: requested panic");
}

static void bugzoo_ipi_warn(void *unused)
{
	WARN(1, "bugzoo: warning on every CPU at once\n");
}

static void bugzoo_ipi_null(void *unused)
{
	*bugzoo_null = smp_processor_id();
	KEEP_FRAME();
}

static int trigger_set(const char *val, const struct kernel_param *kp)
{
	if (sysfs_streq(val, "warn"))
		bugzoo_trigger_warn();
	else if (sysfs_streq(val, "warn_msg"))
		bugzoo_trigger_warn_msg();
	else if (sysfs_streq(val, "bug"))
		bugzoo_trigger_bug();
	else if (sysfs_streq(val, "null"))
		bugzoo_trigger_null();
	else if (sysfs_streq(val, "gpf"))
		bugzoo_trigger_gpf();
	else if (sysfs_streq(val, "pagefault"))
		bugzoo_trigger_pagefault();
	else if (sysfs_streq(val, "badpage"))
		bugzoo_bad_page();
	else if (sysfs_streq(val, "softlockup"))
		bugzoo_trigger_softlockup();
	else if (sysfs_streq(val, "hung"))
		bugzoo_trigger_hung();
	else if (sysfs_streq(val, "list"))
		bugzoo_trigger_list();
	else if (sysfs_streq(val, "refcount"))
		bugzoo_trigger_refcount();
	else if (sysfs_streq(val, "atomic_sleep"))
		bugzoo_trigger_atomic_sleep();
	else if (sysfs_streq(val, "panic"))
		bugzoo_trigger_panic();
	else if (sysfs_streq(val, "warn_all"))
		on_each_cpu(bugzoo_ipi_warn, NULL, 1);
	else if (sysfs_streq(val, "null_all"))
		on_each_cpu(bugzoo_ipi_null, NULL, 1);
	else if (sysfs_streq(val, "kfence"))
		bugzoo_trigger_kfence();
	else
		return -EINVAL;
	return 0;
}

static const struct kernel_param_ops trigger_ops = {
	.set = trigger_set,
};
module_param_cb(trigger, &trigger_ops, NULL, 0200);
MODULE_PARM_DESC(trigger, "fire a bug now (see the source for the list)");

static int __init bugzoo_init(void)
{
	int ret = register_memory_notifier(&bugzoo_nb);

	if (ret)
		return ret;
	/* Without the probe (no kprobes, or kpageflags_read inlined) race_walker cannot fire. */
	walker_probe_on = register_kretprobe(&walker_probe) == 0;
	pr_info("bugzoo: loaded, armed: '%s'%s\n", bugs,
		walker_probe_on ? "" : " (no kpageflags_read probe: race_walker is off)");
	return 0;
}

static void __exit bugzoo_exit(void)
{
	if (walker_probe_on)
		unregister_kretprobe(&walker_probe);
	unregister_memory_notifier(&bugzoo_nb);
}

module_init(bugzoo_init);
module_exit(bugzoo_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("hotfuzz bug zoo: planted memory hotplug bugs for testing hotfuzz");
