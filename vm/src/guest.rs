//! The guest's userspace: busybox, dropbear with its libraries, the hotfuzz `/init`, kernel
//! modules and any files a caller adds (the executor), assembled into a cached initramfs.

use crate::arch::Arch;
use crate::debian;
use crate::error::{Error, IoContext, Result};
use crate::host::{self, Requirement};
use crate::image::{GuestImage, Source};
use crate::kernel::Kernel;
use crate::modules::{ModuleFile, ModuleIndex, ModuleRequest};
use crate::sysroot::{elf_needs, Sysroots};
use std::fs;
use std::path::PathBuf;

/// Console line `/init` prints once modules are loaded and networking is up.
pub const READY_MARKER: &str = "hotfuzz-init: ready";
/// Console line prefix `/init` uses for its own messages.
pub const INIT_PREFIX: &str = "hotfuzz-init:";
/// Console line `/init` prints when the guest has no network interface.
pub const NO_NETWORK_MARKER: &str = "hotfuzz-init: no eth0";
/// Guest directory holding the modules hotfuzz loads.
pub const MODULE_DIR: &str = "/lib/modules/hotfuzz";

/// Modules ssh needs, loaded first (with their dependencies) when the kernel has them as
/// modules.
pub fn network_modules(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["failover", "net_failover", "virtio_net"],
        // Debian's ppc64el kernel has even the virtio PCI transport as a module.
        Arch::Ppc64le => &["virtio_pci", "failover", "net_failover", "virtio_net"],
    }
}

/// Modules loaded in every x86_64 guest when the kernel has them as modules: the memory
/// devices and the fault injectors the operation set uses.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_mem",
    "virtio_balloon",
    "notifier_error_inject",
    "memory_notifier_error_inject",
    "hwpoison_inject",
];

/// A file a caller adds to the guest.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Absolute guest path.
    pub guest_path: String,
    /// Content.
    pub source: Source,
    /// Permission bits.
    pub mode: u32,
}

/// What goes into a guest image besides the fixed userspace.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Modules to load, in order (dependencies are added automatically).
    pub modules: Vec<ModuleRequest>,
    /// Extra files.
    pub extra_files: Vec<ExtraFile>,
    /// Commands started once the modules are loaded, each restarted when it exits (guest
    /// agents).
    pub services: Vec<String>,
    /// Install missing host packages with apt-get when root.
    pub auto_install: bool,
}

/// Default modules on ppc64le powernv (no virtio-mem or balloon there).
pub const DEFAULT_MODULES_PPC64LE: &[&str] = &[
    "notifier_error_inject",
    "memory_notifier_error_inject",
    "hwpoison_inject",
];

impl GuestSpec {
    /// The default module set for `arch`, no extra files.
    pub fn for_arch(arch: Arch) -> GuestSpec {
        let list = match arch {
            Arch::X86_64 => DEFAULT_MODULES,
            Arch::Ppc64le => DEFAULT_MODULES_PPC64LE,
        };
        GuestSpec {
            modules: list.iter().map(|m| ModuleRequest::new(m)).collect(),
            extra_files: Vec::new(),
            services: Vec::new(),
            auto_install: true,
        }
    }
}

/// A built guest image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The cached cpio archive.
    pub path: PathBuf,
    /// Its content hash.
    pub key: String,
    /// Modules `/init` loads, in order.
    pub modules: Vec<String>,
    /// Requested modules the kernel has neither as module nor built in (as far as known).
    pub missing_modules: Vec<String>,
}

/// Where busybox and dropbear come from for an architecture.
#[derive(Debug, Clone)]
struct Userspace {
    busybox: PathBuf,
    /// Applet paths (`bin/sh`, ...) when the busybox can be asked on this host; otherwise
    /// `/init` installs the links at boot.
    applets: Vec<String>,
    sysroots: Sysroots,
}

fn native_applets(busybox: &std::path::Path) -> Vec<String> {
    std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| format!("/{}", l.trim()))
                .filter(|l| l.len() > 1 && !l.contains(".."))
                .collect()
        })
        .unwrap_or_default()
}

fn userspace(arch: Arch, auto_install: bool) -> Result<Userspace> {
    if Some(arch) == Arch::host() {
        host::ensure(
            &[
                Requirement {
                    probe: "/bin/busybox",
                    package: "busybox-static",
                },
                Requirement {
                    probe: "/usr/sbin/dropbear",
                    package: "dropbear-bin",
                },
            ],
            auto_install,
        )?;
        let busybox = PathBuf::from("/bin/busybox");
        let data = fs::read(&busybox).ctx(|| "reading /bin/busybox".into())?;
        if elf_needs(&data)?.interp.is_some() {
            return Err(Error::MissingTool {
                what: "a static busybox (/bin/busybox is dynamically linked)".into(),
                install: host::install_command(&["busybox-static"]),
            });
        }
        return Ok(Userspace {
            applets: native_applets(&busybox),
            busybox,
            sysroots: Sysroots::new(vec![PathBuf::from("/")], arch.multiarch()),
        });
    }
    // Foreign architecture: unpack Debian's packages for it into the cache.
    let pkgs = [
        "busybox-static",
        "dropbear-bin",
        "libtomcrypt1",
        "libtommath1",
        "zlib1g",
        "libcrypt1",
        "libgmp10",
        "libc6",
    ];
    let mut roots = Vec::new();
    for p in pkgs {
        roots.push(debian::fetch(p, arch)?.root);
    }
    let busybox = roots[0].join("bin/busybox");
    if !busybox.is_file() {
        return Err(Error::Image(format!(
            "busybox-static:{} has no /bin/busybox",
            arch.debian_arch()
        )));
    }
    Ok(Userspace {
        busybox,
        applets: Vec::new(),
        sysroots: Sysroots::new(roots, arch.multiarch()),
    })
}

impl GuestSpec {
    /// Assembles the image for `kernel` and returns the cached archive.
    pub fn build(&self, kernel: &Kernel) -> Result<BuiltImage> {
        let arch = kernel.arch;
        let us = userspace(arch, self.auto_install)?;
        let net: Vec<ModuleRequest> = network_modules(arch)
            .iter()
            .map(|m| ModuleRequest::new(m))
            .collect();
        let (groups, missing) = match &kernel.modules_dir {
            Some(dir) => ModuleIndex::scan(dir)?.resolve_groups(&[&net, &self.modules])?,
            None => {
                // No module tree: everything is built in; only explicit files can be loaded.
                let explicit: Vec<ModuleRequest> = self
                    .modules
                    .iter()
                    .filter(|m| m.path.is_some())
                    .cloned()
                    .collect();
                ModuleIndex::default().resolve_groups(&[&[], &explicit])?
            }
        };
        let (net_modules, other_modules) = (&groups[0], &groups[1]);
        let modules: Vec<ModuleFile> = groups.concat();
        for m in &missing {
            tracing::warn!(
                "module {m} is not in {} (nor listed as built in)",
                kernel
                    .modules_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            );
        }
        let mut img = GuestImage::new();
        for d in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/run",
            "/var/log",
            "/etc/dropbear",
            "/mnt",
        ] {
            img.dir(d, 0o755)?;
        }
        img.dir("/tmp", 0o1777)?;
        img.dir("/root", 0o700)?;
        img.file("/bin/busybox", Source::File(us.busybox.clone()), 0o755)?;
        for applet in &us.applets {
            if !img.contains(applet) {
                img.symlink(applet, "/bin/busybox")?;
            }
        }
        for (gp, hp) in us.sysroots.closure("/usr/sbin/dropbear")? {
            img.file(&gp, Source::File(hp), 0o755)?;
        }
        img.file(
            "/etc/passwd",
            Source::Bytes(b"root:x:0:0:root:/root:/etc/hotfuzz/login-shell\n".to_vec()),
            0o644,
        )?;
        img.file(
            "/etc/shells",
            Source::Bytes(b"/bin/sh\n/etc/hotfuzz/login-shell\n".to_vec()),
            0o644,
        )?;
        img.file(
            "/etc/hotfuzz/login-shell",
            Source::Bytes(LOGIN_SHELL.as_bytes().to_vec()),
            0o755,
        )?;
        img.file("/etc/group", Source::Bytes(b"root:x:0:\n".to_vec()), 0o644)?;
        img.file("/etc/hostname", Source::Bytes(b"hotfuzz\n".to_vec()), 0o644)?;
        img.file(
            "/etc/profile",
            Source::Bytes(
                b"export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='hotfuzz# '\n".to_vec(),
            ),
            0o644,
        )?;
        let (init, inittab, rc_net, rc_modules) =
            boot_scripts(net_modules, other_modules, &self.services);
        img.file("/init", Source::Bytes(init.into_bytes()), 0o755)?;
        img.file("/etc/inittab", Source::Bytes(inittab.into_bytes()), 0o644)?;
        img.file(
            "/etc/hotfuzz/rc.net",
            Source::Bytes(rc_net.into_bytes()),
            0o755,
        )?;
        img.file(
            "/etc/hotfuzz/rc.modules",
            Source::Bytes(rc_modules.into_bytes()),
            0o755,
        )?;
        img.file(
            "/etc/hotfuzz/sshd",
            Source::Bytes(SSHD.as_bytes().to_vec()),
            0o755,
        )?;
        for m in &modules {
            img.file(
                &format!("{MODULE_DIR}/{}.ko", m.name),
                Source::Module(m.path.clone()),
                0o644,
            )?;
        }
        for f in &self.extra_files {
            img.file(&f.guest_path, f.source.clone(), f.mode)?;
        }
        let key = img.key()?;
        let path = img.build_cached()?;
        Ok(BuiltImage {
            path,
            key,
            modules: modules.iter().map(|m| m.name.clone()).collect(),
            missing_modules: missing,
        })
    }
}

/// busybox init's table. The modules (and the services, the guest agent among them) and the
/// network load side by side: what programs need does not wait for what ssh needs. dropbear
/// starts once the network is up, and is respawned if it dies (e.g. to the OOM killer).
const INITTAB: &str = "\
::once:/etc/hotfuzz/rc.modules
::once:/etc/hotfuzz/rc.net
::respawn:/etc/hotfuzz/sshd
::shutdown:/bin/sync
";

/// Where rc.net says the network is up.
const NET_UP_FLAG: &str = "/dev/shm/.hotfuzz-net-up";

/// Starts dropbear in the foreground once the network is up, protected from the OOM killer,
/// with the per-VM host key (-R only as a fallback), key logins only (-s).
const SSHD: &str = "\
#!/bin/sh
while [ ! -e /dev/shm/.hotfuzz-net-up ]; do sleep 0.05 2>/dev/null || sleep 1; done
echo -1000 > /proc/self/oom_score_adj
exec /usr/sbin/dropbear -F -R -s -p 22
";

/// root's login shell: ssh sessions leave dropbear's OOM immunity behind (as OpenSSH's
/// children do), so a guest process that exhausts memory is OOM-killed instead of the kernel
/// panicking with "no killable processes".
const LOGIN_SHELL: &str = "\
#!/bin/sh
echo 0 > /proc/self/oom_score_adj
[ $# -eq 0 ] && exec /bin/sh -l
exec /bin/sh \"$@\"
";

/// The guest's `/init`: mounts, then hands over to busybox init.
const INIT: &str = r#"#!/bin/busybox sh
# Written by hotfuzz: mounts file systems and hands over to busybox init (/etc/inittab).
[ -e /bin/sh ] || /bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
# Allow every sysrq function, so a guest that stops answering can still be asked for a task dump.
echo 1 > /proc/sys/kernel/sysrq
echo "hotfuzz-init: started"
exec /sbin/init
"#;

/// Shell function shared by the rc scripts: insmod with parameters from the command line
/// (`module.param=value`, as modprobe would pass them), reporting failures on the console.
const LOAD_FN: &str = r#"cmdline=$(cat /proc/cmdline)
load() {
  m=$1; f=$2; shift 2
  p=""
  for a in $cmdline; do
    case "$a" in "$m".*) p="$p ${a#"$m".}";; esac
  done
  insmod "$f" "$@" $p || echo "hotfuzz-init: insmod $m failed"
}
"#;

/// The boot scripts (`/init`, inittab, rc.net, rc.modules) for the network modules and the
/// others, each in load order.
pub fn boot_scripts(
    net_modules: &[ModuleFile],
    modules: &[ModuleFile],
    services: &[String],
) -> (String, String, String, String) {
    let line = |m: &ModuleFile| {
        format!(
            "load {name} {MODULE_DIR}/{name}.ko {params}\n",
            name = m.name,
            params = m.params
        )
    };
    let mut net = format!("#!/bin/sh\n# Written by hotfuzz: network for ssh.\n{LOAD_FN}");
    let mut rest = format!("#!/bin/sh\n# Written by hotfuzz: the remaining modules.\n{LOAD_FN}");
    for m in net_modules {
        net.push_str(&line(m));
    }
    for m in modules {
        rest.push_str(&line(m));
    }
    net.push_str(
        r#"ip link set lo up
if ip link set eth0 up; then
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
else
  echo "hotfuzz-init: no eth0 (network driver missing?)"
fi
hostname hotfuzz
"#,
    );
    net.push_str(&format!(": > {NET_UP_FLAG}\n"));
    for s in services {
        rest.push_str(&format!(
            "(while :; do {s}; sleep 1; done) </dev/null >/dev/console 2>&1 &\n"
        ));
    }
    rest.push_str("echo \"hotfuzz-init: ready\"\n");
    (INIT.to_string(), INITTAB.to_string(), net, rest)
}

/// The per-VM part of the initramfs: the VM's authorized client key and its own host key.
pub fn overlay(public_key_line: &str, host_key: &crate::keys::HostKey) -> Result<Vec<u8>> {
    let mut img = GuestImage::new();
    img.dir("/etc/dropbear", 0o755)?;
    img.file(
        "/etc/dropbear/dropbear_ed25519_host_key",
        Source::Bytes(host_key.dropbear_private.clone()),
        0o600,
    )?;
    img.dir("/root", 0o700)?;
    img.dir("/root/.ssh", 0o700)?;
    img.file(
        "/root/.ssh/authorized_keys",
        Source::Bytes(format!("{public_key_line}\n").into_bytes()),
        0o600,
    )?;
    img.write_cpio(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_other_modules_load_in_order() {
        let m = |n: &str, p: &str| ModuleFile {
            name: n.into(),
            path: "/x.ko".into(),
            params: p.into(),
        };
        let net_mods = vec![m("failover", ""), m("net_failover", "")];
        let mods = vec![
            m("notifier_error_inject", ""),
            m("memory_notifier_error_inject", "priority=10"),
        ];
        let (init, inittab, net, rest) =
            boot_scripts(&net_mods, &mods, &["/usr/bin/agent serve".to_string()]);
        assert!(init.trim_end().ends_with("exec /sbin/init"));
        // Modules and network load side by side; dropbear waits for the network.
        assert!(inittab.contains("::once:/etc/hotfuzz/rc.modules"));
        assert!(inittab.contains("::once:/etc/hotfuzz/rc.net"));
        assert!(net.trim_end().ends_with(NET_UP_FLAG));
        assert!(SSHD.contains(NET_UP_FLAG));
        assert!(net.find("load failover").unwrap() < net.find("load net_failover").unwrap());
        assert!(!net.contains("notifier"));
        assert!(rest.find("load notifier_error_inject").unwrap()
            < rest.find("load memory_notifier_error_inject /lib/modules/hotfuzz/memory_notifier_error_inject.ko priority=10").unwrap());
        assert!(rest
            .trim_end()
            .ends_with(&format!("echo \"{READY_MARKER}\"")));
        // Services start after the modules, before the ready marker, restarted when they exit.
        let svc = rest
            .find("while :; do /usr/bin/agent serve; sleep 1; done")
            .unwrap();
        assert!(svc > rest.find("load memory_notifier_error_inject").unwrap());
        assert!(svc < rest.find(READY_MARKER).unwrap());
    }

    #[test]
    fn overlay_holds_only_the_key() {
        let hk = crate::keys::HostKey::generate().unwrap();
        let o = overlay("ssh-ed25519 AAAA test", &hk).unwrap();
        let text = String::from_utf8_lossy(&o);
        assert!(text.contains("root/.ssh/authorized_keys"));
        assert!(text.contains("ssh-ed25519 AAAA test"));
        assert!(text.contains("etc/dropbear/dropbear_ed25519_host_key"));
    }
}
